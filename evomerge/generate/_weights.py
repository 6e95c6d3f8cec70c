"""In-place weight updates of a live ``torch.nn.Module`` from (HF name, tensor) pairs."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import torch

from evomerge.exceptions import GenerationError
from evomerge.pool import vocab_role

logger = logging.getLogger(__name__)

__all__ = [
    "IGNORED_SUFFIXES",
    "check_shapes",
    "checkpoint_shapes",
    "copy_named_tensors",
    "weight_targets",
]

#: Tensors that may appear in a checkpoint but are recomputed by the model, never loaded.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq", "rotary_emb.original_inv_freq", "attn.masked_bias")


def weight_targets(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers by their checkpoint (HF) name.

    Tied weights appear under every name (``lm_head.weight`` and
    ``model.embed_tokens.weight`` are then the same tensor).
    """
    return dict(model.state_dict(keep_vars=True))


def checkpoint_shapes(model_dir: str | Path) -> dict[str, tuple[int, ...]] | None:
    """Tensor name -> shape from the safetensors headers of ``model_dir`` (no data read);
    None when the directory has no ``.safetensors`` files."""
    from safetensors import safe_open

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        return None
    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as sf:
            for key in sf.keys():  # noqa: SIM118 (safe_open is not a Mapping)
                shapes[key] = tuple(sf.get_slice(key).get_shape())
    return shapes


def check_shapes(
    named_tensors: Iterable[tuple[str, torch.Tensor]], shapes: Mapping[str, tuple[int, ...]]
) -> Iterator[tuple[str, torch.Tensor]]:
    """Pass the pairs through, raising GenerationError at the first unknown name or wrong
    shape (recomputed buffers such as rotary ``inv_freq`` pass unchecked)."""
    for name, t in named_tensors:
        want = shapes.get(name)
        if want is None:
            if name.endswith(IGNORED_SUFFIXES) or vocab_role(name) == "head":
                yield name, t  # tied heads are absent from tied checkpoints
                continue
            raise _unknown(name, shapes)
        if tuple(t.shape) != want:
            raise GenerationError(
                f"load_weights: tensor {name!r} has shape {tuple(t.shape)} but the model's is {want}; "
                "merge from models with this architecture and vocabulary"
            )
        yield name, t


def _unknown(name: str, targets: Mapping[str, object]) -> GenerationError:
    close = difflib.get_close_matches(name, list(targets), n=3, cutoff=0.6)
    hint = (
        f" Did you mean: {', '.join(close)}?"
        if close
        else f" The model has {len(targets)} tensors, e.g. {next(iter(targets), '-')}."
    )
    return GenerationError(
        f"load_weights: unknown tensor {name!r}: not a parameter of this model.{hint}"
    )


def copy_named_tensors(
    targets: Mapping[str, torch.Tensor],
    named_tensors: Iterable[tuple[str, torch.Tensor]] | Mapping[str, torch.Tensor],
    *,
    strict: bool = False,
) -> int:
    """Copy each tensor into ``targets[name]`` in place (``.data.copy_`` under no_grad).

    dtype and device are converted; shapes must match exactly. A tensor tied to one
    already written in this call (same storage under another name) is checked, not copied
    twice: different values raise. ``strict`` also requires every target to be given
    (tied aliases count as given). Returns the number of tensors written.

    Raises GenerationError naming an unknown tensor, a shape mismatch, conflicting tied
    values or (strict) the missing tensors. Tensors are copied as they arrive, so on error
    the model may be partially updated; the caller should fail the trial.
    """
    if isinstance(named_tensors, Mapping):  # a state dict works too
        named_tensors = named_tensors.items()
    written: dict[int, str] = {}
    count = 0
    with torch.no_grad():
        for name, src in named_tensors:
            target = targets.get(name)
            if target is None:
                if name.endswith(IGNORED_SUFFIXES):
                    logger.debug("load_weights: skipping recomputed buffer %s", name)
                    continue
                raise _unknown(name, targets)
            if tuple(src.shape) != tuple(target.shape):
                raise GenerationError(
                    f"load_weights: tensor {name!r} has shape {tuple(src.shape)} but the model's "
                    f"is {tuple(target.shape)}; merge from models with this architecture and vocabulary"
                )
            key = id(target)
            if key in written:
                if not torch.equal(target.data, src.to(device=target.device, dtype=target.dtype)):
                    raise GenerationError(
                        f"load_weights: {name!r} is tied to {written[key]!r} in this model but received "
                        "different values; merge tied weights identically or send only one of them"
                    )
                continue
            target.data.copy_(src)
            written[key] = name
            count += 1
    if strict:
        missing = sorted(
            n
            for n, t in targets.items()
            if id(t) not in written and not n.endswith(IGNORED_SUFFIXES)
        )
        if missing:
            shown = ", ".join(missing[:5]) + (
                f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            )
            raise GenerationError(
                f"load_weights(strict=True): {len(missing)} tensor(s) not given: {shown}"
            )
    return count
