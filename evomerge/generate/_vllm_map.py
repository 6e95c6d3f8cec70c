"""Pure helpers of the ``vllm`` backend, testable without vLLM.

- which (name, tensor) pairs vLLM's reload receives for a stream of Hugging Face tensors
  (vLLM packs q/k/v and gate/up itself from the HF names);
- which vLLM layers an update touches only in part (vLLM reloads a layer whole: the
  members of a layer not sent would be left uninitialized);
- ``GenerationParams`` -> ``vllm.SamplingParams`` keyword arguments;
- mean token NLL from vLLM's ``prompt_logprobs``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch

from evomerge.generate._config import GenerationParams
from evomerge.generate._weights import IGNORED_SUFFIXES

__all__ = [
    "FUSED_PROJECTIONS",
    "incomplete_layers",
    "mean_nll_from_prompt_logprobs",
    "sampling_kwargs",
    "scoring_kwargs",
    "vllm_prompt",
    "vllm_weight_stream",
]

_LM_HEAD = "lm_head.weight"

#: HF projections that vLLM loads into one fused layer (``packed_modules_mapping`` of its
#: Llama-family models). Experts of a mixture-of-experts block form one layer as well.
FUSED_PROJECTIONS: tuple[tuple[str, ...], ...] = (
    ("q_proj", "k_proj", "v_proj"),
    ("gate_proj", "up_proj"),
)
_FUSED_KEY = {leaf: "[" + "|".join(group) + "]" for group in FUSED_PROJECTIONS for leaf in group}
_EXPERT = re.compile(r"\.experts\.\d+\.")


def _layer_key(name: str) -> str:
    """The vLLM layer an HF tensor name loads into (HF module, fused where vLLM fuses)."""
    module = name.rpartition(".")[0]
    parent, _, leaf = module.rpartition(".")
    if leaf in _FUSED_KEY:
        module = f"{parent}.{_FUSED_KEY[leaf]}"
    return _EXPERT.sub(".experts.*.", module)


def incomplete_layers(given: Iterable[str], checkpoint: Iterable[str]) -> dict[str, list[str]]:
    """Layers that ``given`` touches without sending all of their ``checkpoint`` tensors:
    ``{layer: [missing names]}`` (empty when every touched layer is complete).

    vLLM's in-place reload processes a layer once all of its weights arrived; a layer sent
    in part is processed with the rest uninitialized. Recomputed buffers are ignored.
    """
    sent = {n for n in given if not n.endswith(IGNORED_SUFFIXES)}
    touched = {_layer_key(n) for n in sent}
    missing: dict[str, list[str]] = {}
    for name in checkpoint:
        if name in sent or name.endswith(IGNORED_SUFFIXES):
            continue
        key = _layer_key(name)
        if key in touched:
            missing.setdefault(key, []).append(name)
    return missing


def vllm_weight_stream(
    named_tensors: Iterable[tuple[str, torch.Tensor]],
    *,
    tie_word_embeddings: bool,
    rename_prefixes: Mapping[str, str] | None = None,
) -> Iterator[tuple[str, torch.Tensor]]:
    """HF (name, tensor) pairs as vLLM's ``load_weights`` expects them.

    Drops buffers the model recomputes (rotary ``inv_freq``), drops ``lm_head.weight``
    when the embeddings are tied (vLLM shares one tensor and reads the embedding), and
    rewrites the first matching prefix of ``rename_prefixes`` (e.g. ``{"model.": ""}`` for
    an architecture whose vLLM implementation expects names without ``model.``).
    """
    renames = list((rename_prefixes or {}).items())
    for name, tensor in named_tensors:
        if name.endswith(IGNORED_SUFFIXES):
            continue
        if tie_word_embeddings and name == _LM_HEAD:
            continue
        for old, new in renames:
            if name.startswith(old):
                name = new + name[len(old) :]
                break
        yield name, tensor


def sampling_kwargs(params: GenerationParams) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` for ``params``.

    Greedy (temperature 0) sends neither top_p nor seed; sampling sends the seed, so every
    request is reproducible on its own. Stop strings are excluded from the output, special
    tokens skipped; generation also stops at EOS (vLLM's default).
    """
    kw: dict[str, Any] = {
        "max_tokens": params.max_new_tokens,
        "temperature": params.temperature,
        "stop": list(params.stop),
        "include_stop_str_in_output": False,
        "skip_special_tokens": True,
    }
    if params.temperature > 0:
        kw.update(top_p=params.top_p, seed=params.seed)
    return kw


def scoring_kwargs() -> dict[str, Any]:
    """``SamplingParams`` for scoring a text: one greedy token, log-probs of the prompt tokens."""
    return {"max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 1}


def _logprob_value(entry: Any) -> float:
    return float(entry.logprob if hasattr(entry, "logprob") else entry)


def mean_nll_from_prompt_logprobs(
    token_ids: Sequence[int], prompt_logprobs: Sequence[Any] | None
) -> float:
    """Mean NLL of tokens 1.. of a prompt from vLLM's ``RequestOutput.prompt_logprobs``
    (a list aligned with the prompt tokens, ``None`` first, then ``{token_id: Logprob}``).

    NaN for prompts of fewer than two tokens.
    """
    if prompt_logprobs is None or len(token_ids) < 2:
        return math.nan
    total = 0.0
    for tid, entry in zip(token_ids[1:], prompt_logprobs[1:], strict=True):
        total -= _logprob_value(entry[tid])
    return total / (len(token_ids) - 1)


def vllm_prompt(text: str, tokenizer: Any) -> str | dict[str, list[int]]:
    """A vLLM prompt for ``text``: the text itself, or its token ids without added special
    tokens when it already starts with the BOS token (chat templates often write it), so
    that vLLM does not prepend a second one."""
    bos = getattr(tokenizer, "bos_token", None) if tokenizer is not None else None
    if bos and text.startswith(bos):
        return {"prompt_token_ids": list(tokenizer(text, add_special_tokens=False)["input_ids"])}
    return text
