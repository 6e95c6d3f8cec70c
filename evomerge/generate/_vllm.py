"""The ``vllm`` backend: one ``vllm.LLM`` engine per worker for the whole run (GPU).

New weights go in through the model's own ``load_weights(Iterable[(hf_name, tensor)])``,
which packs q/k/v and gate/up itself; the engine is never restarted. The model is reached
with ``LLM.apply_model`` (vLLM >= 0.8), else ``LLM.collective_rpc`` (0.7), else the V0
attribute path ``llm.llm_engine.model_executor.driver_worker.model_runner.model`` (0.6).
After an update the prefix cache is reset, so no KV computed with old weights is reused.

vllm is imported only when a :class:`VLLMGenerator` is built (``pip install 'evomerge[vllm]'``).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from evomerge._yaml import validate_model
from evomerge.exceptions import ConfigError, GenerationError
from evomerge.generate._config import DTYPES, GenerationParams
from evomerge.generate._failure import generation_failure
from evomerge.generate._vllm_map import (
    mean_nll_from_prompt_logprobs,
    sampling_kwargs,
    scoring_kwargs,
    vllm_prompt,
    vllm_weight_stream,
)
from evomerge.generate._weights import check_shapes, checkpoint_shapes

if TYPE_CHECKING:
    from evomerge.generate._config import GenerationConfig

logger = logging.getLogger(__name__)

__all__ = ["VLLMGenerator", "VLLMOptions"]


class VLLMOptions(BaseModel):
    """``generation.backend_options`` for the ``vllm`` backend.

    ``in_process`` runs vLLM's engine core in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``)
    so new weights reach the model by reference, not by pickling them to another process.
    ``rename_prefixes`` rewrites HF tensor-name prefixes for architectures whose vLLM
    implementation expects other names. ``engine_kwargs`` go to ``vllm.LLM`` unchanged.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    gpu_memory_utilization: float = Field(default=0.85, gt=0.0, le=1.0)
    max_model_len: int | None = Field(default=None, ge=1)
    enforce_eager: bool = False
    enable_prefix_caching: bool | None = None
    in_process: bool = True
    rename_prefixes: dict[str, str] = Field(default_factory=dict)
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)
    progress: bool = False


def _load_into_model(weights: list[tuple[str, torch.Tensor]], model: Any) -> int:
    model.load_weights(weights)
    return len(weights)


def _load_into_worker(worker: Any, weights: list[tuple[str, torch.Tensor]]) -> int:
    return _load_into_model(weights, worker.model_runner.model)


def _legacy_model(llm: Any) -> Any:
    obj = llm
    for attr in ("llm_engine", "model_executor", "driver_worker", "model_runner", "model"):
        obj = getattr(obj, attr, None)
        if obj is None:
            return None
    return obj


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as err:
        raise GenerationError(
            "backend 'vllm' needs vLLM on a CUDA machine: pip install 'evomerge[vllm]'"
        ) from err
    return vllm


class VLLMGenerator:
    """Generation (and prompt scoring) with one long-lived vLLM engine; see :class:`Generator`.

    Construct with :meth:`from_pretrained` / :meth:`from_config`, or wrap an existing
    ``llm`` (tests pass a fake). Not thread-safe.
    """

    def __init__(
        self,
        *,
        llm: Any,
        sampling_params_cls: Callable[..., Any],
        tie_word_embeddings: bool,
        checkpoint_shapes: dict[str, tuple[int, ...]] | None = None,
        options: VLLMOptions | None = None,
    ) -> None:
        self._llm = llm
        self._sp = sampling_params_cls
        self._tied = tie_word_embeddings
        self._shapes = checkpoint_shapes
        self._opts = options or VLLMOptions()
        get_tok = getattr(llm, "get_tokenizer", None)
        self._tok = get_tok() if callable(get_tok) else None

    @classmethod
    def from_pretrained(
        cls,
        model_path: str | Path,
        *,
        device: str = "cuda",
        dtype: str = "auto",
        trust_remote_code: bool = False,
        options: VLLMOptions | None = None,
    ) -> VLLMGenerator:
        """Start the engine on ``model_path``. vLLM uses the visible GPU (``cuda``,
        ``cuda:0`` or ``auto``); pick another with ``CUDA_VISIBLE_DEVICES``.

        Raises GenerationError when vLLM is missing, the device is unsupported, or the
        engine fails to start.
        """
        if device not in ("auto", "cuda", "cuda:0"):
            raise GenerationError(
                f"backend 'vllm' runs on the visible GPU; device {device!r} is not supported "
                "(use 'cuda' and select the GPU with CUDA_VISIBLE_DEVICES, or backend 'hf' on CPU)"
            )
        opts = options or VLLMOptions()
        if opts.in_process:
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        # vLLM >= 0.10 refuses to pickle callables for collective_rpc without this.
        os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
        vllm = _import_vllm()
        from transformers import AutoConfig

        hf_cfg = AutoConfig.from_pretrained(
            str(model_path), **({"trust_remote_code": True} if trust_remote_code else {})
        )
        kwargs: dict[str, Any] = {
            "model": str(model_path),
            "dtype": "bfloat16" if dtype == "auto" else dtype,
            "gpu_memory_utilization": opts.gpu_memory_utilization,
            "enforce_eager": opts.enforce_eager,
            "seed": 0,
        }
        if opts.max_model_len is not None:
            kwargs["max_model_len"] = opts.max_model_len
        if opts.enable_prefix_caching is not None:
            kwargs["enable_prefix_caching"] = opts.enable_prefix_caching
        if trust_remote_code:
            kwargs["trust_remote_code"] = True
        kwargs.update(opts.engine_kwargs)
        try:
            llm = vllm.LLM(**kwargs)
        except Exception as err:
            raise GenerationError(f"vLLM could not start on {model_path}: {err}") from err
        return cls(
            llm=llm,
            sampling_params_cls=vllm.SamplingParams,
            tie_word_embeddings=bool(getattr(hf_cfg, "tie_word_embeddings", False)),
            checkpoint_shapes=checkpoint_shapes(model_path),
            options=opts,
        )

    @classmethod
    def from_config(
        cls,
        cfg: GenerationConfig,
        *,
        model_path: Path,
        device: str,
        trust_remote_code: bool = False,
    ) -> VLLMGenerator:
        """Build from the ``generation:`` section (ConfigError on bad ``backend_options``)."""
        opts = validate_model(
            VLLMOptions, cfg.backend_options, source="generation.backend_options (vllm)"
        )
        if cfg.dtype not in DTYPES:
            raise ConfigError(f"generation.dtype {cfg.dtype!r} is not supported by vllm")
        return cls.from_pretrained(
            model_path,
            device=device,
            dtype=cfg.dtype,
            trust_remote_code=trust_remote_code,
            options=opts,
        )

    @property
    def llm(self) -> Any:
        """The live ``vllm.LLM`` engine (the same object for the whole run)."""
        return self._llm

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Check names/shapes against the checkpoint, map them for vLLM, load in place on
        every worker, then reset the prefix cache."""
        if isinstance(named_tensors, Mapping):  # a state dict works too
            named_tensors = named_tensors.items()
        stream = (
            named_tensors if self._shapes is None else check_shapes(named_tensors, self._shapes)
        )
        weights = list(
            vllm_weight_stream(
                stream, tie_word_embeddings=self._tied, rename_prefixes=self._opts.rename_prefixes
            )
        )
        try:
            self._apply(weights)
        except GenerationError:
            raise
        except Exception as err:
            raise generation_failure(
                f"vLLM rejected the new weights ({type(err).__name__})", err
            ) from err
        reset = getattr(self._llm, "reset_prefix_cache", None)
        if callable(reset):
            reset()
        else:
            logger.warning(
                "this vLLM has no LLM.reset_prefix_cache(); disable prefix caching to avoid stale KV"
            )
        logger.debug("vllm generator: loaded %d tensors in place", len(weights))

    def _apply(self, weights: list[tuple[str, torch.Tensor]]) -> None:
        llm = self._llm
        if callable(getattr(llm, "apply_model", None)):
            llm.apply_model(functools.partial(_load_into_model, weights))
            return
        if callable(getattr(llm, "collective_rpc", None)):
            llm.collective_rpc(_load_into_worker, args=(weights,))
            return
        model = _legacy_model(llm)
        if model is None:
            raise GenerationError(
                "cannot reach the vLLM model to load weights: this vLLM has neither LLM.apply_model, "
                "LLM.collective_rpc nor llm_engine.model_executor.driver_worker.model_runner.model; "
                "use vllm>=0.6"
            )
        _load_into_model(weights, model)

    def _prompts(self, texts: Sequence[str]) -> list[Any]:
        return [vllm_prompt(t, self._tok) for t in texts]

    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[str]:
        """All prompts in one call (vLLM batches continuously; ``batch_size`` is unused)."""
        if not prompts:
            return []
        sp = self._sp(**sampling_kwargs(params))
        try:
            outputs = self._llm.generate(self._prompts(prompts), sp, use_tqdm=self._opts.progress)
        except Exception as err:
            raise generation_failure(f"vLLM generate failed ({type(err).__name__})", err) from err
        return [o.outputs[0].text.strip() for o in outputs]

    def score_texts(self, texts: Sequence[str]) -> list[float]:
        """Mean token NLL of each text from vLLM's prompt log-probabilities."""
        if not texts:
            return []
        sp = self._sp(**scoring_kwargs())
        try:
            outputs = self._llm.generate(self._prompts(texts), sp, use_tqdm=False)
        except Exception as err:
            raise generation_failure(f"vLLM scoring failed ({type(err).__name__})", err) from err
        return [
            mean_nll_from_prompt_logprobs(o.prompt_token_ids, o.prompt_logprobs) for o in outputs
        ]
