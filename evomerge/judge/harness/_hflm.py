"""The harness's HF wrapper around the worker's live model, as the ``lm_eval`` judge uses it.

:func:`live_hflm` builds lm-eval's ``HFLM`` on a model object (no per-request progress
bars) and, with ``share_context`` (the judge's default), answers log-likelihood requests
through :mod:`evomerge.judge.harness._packed`: one row per context holding all of its
continuations, instead of one row per request. Everything else (tokenization, task
prompts, generation, metrics) stays the harness's.

Packing relies on the model honouring a custom 4D attention mask and explicit position
ids. The first log-likelihood call therefore scores its first context both ways; if the two
disagree beyond rounding (:func:`agree`), the wrapper logs a warning once and uses the
harness's own path from then on. Contexts whose packed row would be longer than the
model's ``max_length`` also take the harness's path (it truncates them from the left).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported when a wrapper is built: configs import this module
    import torch

    from evomerge.judge.harness._packed import ContextGroup

logger = logging.getLogger(__name__)

__all__ = ["agree", "live_hflm"]

#: Tokenized (context, continuation) pairs kept per wrapper (a task's requests, many times over)
ENCODED_PAIRS = 65536

#: Request as the harness's ``_loglikelihood_tokens`` receives it.
_Request = tuple[tuple[str, str] | None, list[int], list[int]]


def agree(ours: tuple[float, bool], theirs: tuple[float, bool], dtype: torch.dtype) -> bool:
    """Whether a packed log-likelihood matches the harness's up to rounding in ``dtype``.

    The two differ in summation order (other shapes, other padding), by a few units of the
    dtype's precision relative to the value: allowed ``4 * eps * (|value| + 1)``, 3-4%
    of the value in bfloat16, under a millionth in float32. A model that ignores the mask or
    the position ids gives a continuation other tokens to attend to, which moves the value
    by far more in any trained model.
    """
    import torch

    eps = torch.finfo(dtype).eps if dtype.is_floating_point else torch.finfo(torch.float32).eps
    return abs(ours[0] - theirs[0]) <= 4 * eps * (abs(theirs[0]) + 1.0)


def live_hflm(*, share_context: bool = True, **kwargs: Any) -> Any:
    """lm-eval's ``HFLM(**kwargs)`` (``pretrained`` a live model), quiet, packing contexts
    when ``share_context``; see the module docstring."""
    from lm_eval.models.huggingface import HFLM

    from evomerge.judge.harness._packed import group_by_context, pack, score_packed

    # _loglikelihood_tokens and _encode_pair are lm-eval's TemplateLM hooks for subclasses
    class LiveHFLM(HFLM):
        def __init__(self, **kw: Any) -> None:
            super().__init__(**kw)
            self.share_context = share_context and self.backend == "causal"
            self.checked = False
            self.encoded: dict[tuple[str, str], tuple[list[int], list[int]]] = {}

        def loglikelihood(self, requests: Any, disable_tqdm: bool = False) -> Any:
            return super().loglikelihood(requests, disable_tqdm=True)

        def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
            # every trial asks for the same requests: tokenize each pair once
            key = (context, continuation)
            hit = self.encoded.get(key)
            if hit is None:
                if len(self.encoded) >= ENCODED_PAIRS:
                    self.encoded.clear()
                hit = self.encoded[key] = super()._encode_pair(context, continuation)
            return list(hit[0]), list(hit[1])

        def loglikelihood_rolling(self, requests: Any, disable_tqdm: bool = False) -> Any:
            return super().loglikelihood_rolling(requests, disable_tqdm=True)

        def generate_until(self, requests: Any, disable_tqdm: bool = False) -> Any:
            return super().generate_until(requests, disable_tqdm=True)

        def _loglikelihood_tokens(
            self,
            requests: list[_Request],
            disable_tqdm: bool = False,
            override_bs: int | None = None,
        ) -> list[tuple[float, bool]]:
            if not self.share_context:
                return super()._loglikelihood_tokens(requests, True, override_bs)
            groups = group_by_context([(ctx, cont) for _, ctx, cont in requests])
            fits = [g for g in groups if g.length <= self.max_length]
            if fits and not self.checked and not self._check(requests, fits[0]):
                return super()._loglikelihood_tokens(requests, True, override_bs)
            results: dict[int, tuple[float, bool]] = {}
            rest = [i for g in groups if g.length > self.max_length for i, _ in g.continuations]
            harness_scored = set(rest)  # the harness's own path adds them to the cache hook
            if rest:
                theirs = super()._loglikelihood_tokens([requests[i] for i in rest], True)
                results.update(zip(rest, theirs, strict=True))
            results.update(self._packed(fits))
            for i, (request_str, _, _) in enumerate(requests):
                if request_str is not None and i not in harness_scored:
                    self.cache_hook.add_partial("loglikelihood", request_str, results[i])
            return [results[i] for i in range(len(requests))]

        def _packed(self, groups: Sequence[ContextGroup]) -> dict[int, tuple[float, bool]]:
            per_batch = self.batch_size if isinstance(self.batch_size, int) else 8
            ordered = sorted(groups, key=lambda g: -g.length)  # similar lengths share a batch
            out: dict[int, tuple[float, bool]] = {}
            for start in range(0, len(ordered), per_batch):
                batch = pack(
                    ordered[start : start + per_batch],
                    dtype=self.model.dtype,
                    device=self.model.device,
                    pad_id=self.tokenizer.pad_token_id or 0,
                )
                out.update(score_packed(self.model, batch, softmax_dtype=self.softmax_dtype))
            return out

        def _check(self, requests: list[_Request], group: ContextGroup) -> bool:
            """Score ``group`` both ways once; keep packing only if they agree."""
            self.checked = True
            ours = self._packed([group])
            indices = [i for i, _ in group.continuations]
            theirs = super()._loglikelihood_tokens([requests[i] for i in indices], True)
            dtype = self.softmax_dtype or self.model.dtype
            bad = [
                (i, ours[i][0], t[0])
                for i, t in zip(indices, theirs, strict=True)
                if not agree(ours[i], t, dtype)
            ]
            if bad:
                self.share_context = False
                logger.warning(
                    "lm_eval: %s does not give the harness's log-likelihoods from packed rows "
                    "(request %d: %.6g vs %.6g); scoring one row per request from now on",
                    type(self.model).__name__,
                    *bad[0],
                )
            return not bad

    return LiveHFLM(**kwargs)
