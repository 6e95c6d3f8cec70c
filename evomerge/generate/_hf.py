"""The ``hf`` backend: a transformers causal LM kept alive for the whole run.

Weights are swapped in place between trials (:meth:`HFGenerator.load_weights`); the model
object never changes, so the merge engine may also write straight into
:meth:`HFGenerator.parameters_by_name`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from evomerge._yaml import validate_model
from evomerge.exceptions import GenerationError
from evomerge.generate._config import GenerationParams
from evomerge.generate._device import resolve_device, resolve_dtype
from evomerge.generate._failure import generation_failure
from evomerge.generate._stopping import cut_at_stop, has_stop
from evomerge.generate._weights import copy_named_tensors, weight_targets

if TYPE_CHECKING:
    from evomerge.generate._config import GenerationConfig

logger = logging.getLogger(__name__)

__all__ = ["HFGenerator", "HFOptions"]


class HFOptions(BaseModel):
    """``generation.backend_options`` for the ``hf`` backend."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    attn_implementation: str | None = None  # e.g. "sdpa", "eager", "flash_attention_2"
    score_batch_size: int = Field(default=4, ge=1)
    progress: bool = False


def _stop_criteria(tokenizer: Any, stops: Sequence[str], prompt_len: int) -> Any:
    """A StoppingCriteria marking a row done once its new text contains a stop string.

    Only the last ``window`` new tokens are decoded per step (every token decodes to at
    least one character, so a window a bit longer than the longest stop string sees it);
    answers are cut exactly afterwards by :func:`cut_at_stop` anyway.
    """
    from transformers import StoppingCriteria

    window = max(len(s) for s in stops) + 8

    class _StopStrings(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
            tail = input_ids[:, max(prompt_len, input_ids.shape[1] - window) :]
            texts = tokenizer.batch_decode(tail, skip_special_tokens=True)
            return torch.tensor(
                [has_stop(t, stops) for t in texts], dtype=torch.bool, device=input_ids.device
            )

    return _StopStrings()


class HFGenerator:
    """Generation and scoring with a Hugging Face model; see :class:`Generator`.

    Construct with :meth:`from_pretrained` (or :meth:`from_config`). Not thread-safe.
    """

    def __init__(self, *, model: Any, tokenizer: Any, options: HFOptions | None = None) -> None:
        self._model = model.eval()
        self._tok = tokenizer
        self._opts = options or HFOptions()
        if self._tok.pad_token_id is None:
            if self._tok.eos_token is None:
                raise GenerationError(
                    "the tokenizer has neither a pad token nor an EOS token; cannot batch prompts"
                )
            self._tok.pad_token = self._tok.eos_token
        self._targets = weight_targets(model)
        self._eos = self._eos_ids()
        self._neutralize_generation_defaults()

    @classmethod
    def from_pretrained(
        cls,
        model_path: str | Path,
        *,
        device: str = "auto",
        dtype: str = "auto",
        trust_remote_code: bool = False,
        options: HFOptions | None = None,
    ) -> HFGenerator:
        """Load model and tokenizer from a local HF directory onto ``device`` in ``dtype``.

        Raises GenerationError when the directory cannot be loaded or the device is absent.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        opts = options or HFOptions()
        dev = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, dev)
        kwargs: dict[str, Any] = {"dtype": torch_dtype}
        if trust_remote_code:
            kwargs["trust_remote_code"] = True
        if opts.attn_implementation is not None:
            kwargs["attn_implementation"] = opts.attn_implementation
        try:
            tok = AutoTokenizer.from_pretrained(
                str(model_path), **({"trust_remote_code": True} if trust_remote_code else {})
            )
            model: Any = AutoModelForCausalLM.from_pretrained(str(model_path), **kwargs)
        except (OSError, ValueError) as err:
            raise GenerationError(f"cannot load a causal LM from {model_path}: {err}") from err
        if model.dtype != torch_dtype:  # older transformers ignore `dtype=`
            model.to(torch_dtype)
        model.to(dev)
        logger.info("hf generator: %s on %s in %s", model_path, dev, torch_dtype)
        return cls(model=model, tokenizer=tok, options=opts)

    @classmethod
    def from_config(
        cls,
        cfg: GenerationConfig,
        *,
        model_path: Path,
        device: str,
        trust_remote_code: bool = False,
    ) -> HFGenerator:
        """Build from the ``generation:`` section (ConfigError on bad ``backend_options``)."""
        opts = validate_model(
            HFOptions, cfg.backend_options, source="generation.backend_options (hf)"
        )
        return cls.from_pretrained(
            model_path,
            device=device,
            dtype=cfg.dtype,
            trust_remote_code=trust_remote_code,
            options=opts,
        )

    # -- introspection ---------------------------------------------------------------------------

    @property
    def model(self) -> Any:
        """The live transformers model (the same object for the whole run)."""
        return self._model

    @property
    def tokenizer(self) -> Any:
        return self._tok

    @property
    def device(self) -> torch.device:
        return next(self._model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self._model.dtype

    def parameters_by_name(self) -> dict[str, torch.Tensor]:
        """The model's live tensors by HF name (tied weights under each name); writing into
        them under ``torch.no_grad()`` is the zero-copy alternative to ``load_weights``."""
        return dict(self._targets)

    # -- weights ----------------------------------------------------------------------------------

    def load_weights(
        self, named_tensors: Iterable[tuple[str, torch.Tensor]], *, strict: bool = False
    ) -> None:
        """Copy tensors into the existing parameters (see :func:`copy_named_tensors`)."""
        n = copy_named_tensors(self._targets, named_tensors, strict=strict)
        logger.debug("hf generator: loaded %d tensors in place", n)

    # -- generation -------------------------------------------------------------------------------

    def _eos_ids(self) -> list[int]:
        ids: list[int] = []
        gen_eos = getattr(self._model.generation_config, "eos_token_id", None)
        for x in [self._tok.eos_token_id, *(gen_eos if isinstance(gen_eos, list) else [gen_eos])]:
            if x is not None and x not in ids:
                ids.append(int(x))
        return ids

    def _neutralize_generation_defaults(self) -> None:
        # transformers fills every field we leave unset from the checkpoint's
        # generation_config.json (temperature, top_k, repetition_penalty, ...); keep only the
        # special token ids so that GenerationParams alone decide how we decode.
        from transformers import GenerationConfig as HFGenerationConfig

        old = self._model.generation_config
        self._model.generation_config = HFGenerationConfig(
            bos_token_id=getattr(old, "bos_token_id", None),
            eos_token_id=self._eos or None,
            pad_token_id=self._tok.pad_token_id,
        )

    def _encode(self, text: str) -> list[int]:
        bos = self._tok.bos_token
        add_special = not (
            bos and text.startswith(bos)
        )  # chat templates often write BOS themselves
        return list(self._tok(text, add_special_tokens=add_special)["input_ids"])

    def _left_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self._tok.pad_token_id, dtype=torch.long)  # [B, T]
        mask = torch.zeros((len(seqs), width), dtype=torch.long)  # [B, T]
        for i, s in enumerate(seqs):
            ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _generation_config(self, params: GenerationParams) -> Any:
        from transformers import GenerationConfig as HFGenerationConfig

        kw: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "eos_token_id": self._eos or None,
            "pad_token_id": self._tok.pad_token_id,
            "do_sample": params.temperature > 0,
        }
        if params.temperature > 0:
            kw.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        return HFGenerationConfig(**kw)

    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[str]:
        """Answers in prompt order; batches of ``params.batch_size`` prompts, left-padded.

        Sampling seeds each batch with ``params.seed + batch_index`` in a forked RNG, so the
        same seed and batching give the same answers and the global RNG is untouched.
        """
        prompts = list(prompts)
        if not prompts:
            return []
        gen_cfg = self._generation_config(params)
        bs = params.batch_size
        answers: list[str] = []
        batches = range(0, len(prompts), bs)
        for b, start in enumerate(tqdm(batches, desc="generate", disable=not self._opts.progress)):
            answers += self._generate_batch(
                prompts[start : start + bs], params, gen_cfg, seed=params.seed + b
            )
        return answers

    def _generate_batch(
        self, prompts: list[str], params: GenerationParams, gen_cfg: Any, *, seed: int
    ) -> list[str]:
        seqs = [self._encode(p) for p in prompts]
        if not all(seqs):
            raise GenerationError(
                "generate: a prompt encodes to no tokens; every prompt needs some text"
            )
        ids, mask = self._left_pad(seqs)
        prompt_len = ids.shape[1]
        kwargs: dict[str, Any] = {
            "input_ids": ids,
            "attention_mask": mask,
            "generation_config": gen_cfg,
        }
        if params.stop:
            from transformers import StoppingCriteriaList

            kwargs["stopping_criteria"] = StoppingCriteriaList(
                [_stop_criteria(self._tok, params.stop, prompt_len)]
            )
        devices = [self.device] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                torch.manual_seed(seed)
                out = self._model.generate(**kwargs)  # [B, T + new]
        except (RuntimeError, ValueError) as err:
            raise generation_failure(
                f"hf generate failed on a batch of {len(prompts)} prompt(s)", err
            ) from err
        texts = self._tok.batch_decode(out[:, prompt_len:], skip_special_tokens=True)
        return [cut_at_stop(t, params.stop).strip() for t in texts]

    # -- scoring ----------------------------------------------------------------------------------

    def score_texts(self, texts: Sequence[str]) -> list[float]:
        """Mean next-token NLL (nats) of each text; NaN when it has fewer than 2 tokens.

        Texts longer than the model's context are truncated to it (with a warning).
        """
        texts = list(texts)
        limit = getattr(self._model.config, "max_position_embeddings", None)
        encoded = []
        for t in texts:
            ids = self._encode(t)
            if limit is not None and len(ids) > limit:
                logger.warning("score_texts: a text of %d tokens truncated to %d", len(ids), limit)
                ids = ids[:limit]
            encoded.append(ids)
        out: list[float] = []
        bs = self._opts.score_batch_size
        for start in range(0, len(encoded), bs):
            out += self._score_batch(encoded[start : start + bs])
        return out

    def _score_batch(self, seqs: list[list[int]]) -> list[float]:
        width = max(1, max(len(s) for s in seqs))
        ids = torch.full(
            (len(seqs), width), self._tok.pad_token_id, dtype=torch.long
        )  # [B, T] right-padded
        mask = torch.zeros((len(seqs), width), dtype=torch.long)  # [B, T]
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        with torch.no_grad():
            logits = self._model(input_ids=ids, attention_mask=mask).logits  # [B, T, V]
            results: list[float] = []
            for i in range(len(seqs)):
                n = int(mask[i].sum())
                if n < 2:
                    results.append(math.nan)
                    continue
                lp = torch.log_softmax(logits[i, : n - 1].float(), dim=-1)  # [n-1, V]
                nll = -lp.gather(1, ids[i, 1:n].unsqueeze(1)).squeeze(1)  # [n-1]
                results.append(float(nll.mean()))
        return results
