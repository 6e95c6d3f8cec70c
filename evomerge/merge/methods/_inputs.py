"""Helpers for methods that work on whole tensors: their inputs in order, and the output."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from evomerge.exceptions import MergeError
from evomerge.merge.methods._spec import MergeArgs

__all__ = ["emit", "inputs_and_weights", "models", "stacked"]


def stacked(deltas: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """The task vectors as one contiguous ``[N, ...]`` tensor (mergekit's ``torch.stack``)."""
    if isinstance(deltas, torch.Tensor):
        return deltas.contiguous()
    return torch.stack(list(deltas))


def models(
    base: torch.Tensor, deltas: torch.Tensor | Sequence[torch.Tensor], args: MergeArgs
) -> list[torch.Tensor]:
    """The merged inputs themselves, in the recipe's order: ``base + delta_i``, and the base
    at ``args.base_index`` when it is one of them (``base + (x - base)`` is ``x`` exactly
    whenever ``x`` and the base are within a factor of two, as fine-tunes are)."""
    xs = [base + d for d in deltas]
    if args.base is not None:
        xs.insert(args.base_index, base)
    return xs


def inputs_and_weights(
    base: torch.Tensor,
    deltas: torch.Tensor | Sequence[torch.Tensor],
    args: MergeArgs,
    name: str = "weight",
) -> tuple[list[torch.Tensor], list[float]]:
    """For a method whose base is optional: the task vectors and their weights when the
    recipe has a ``base_model``, else the models themselves and theirs."""
    weights = [float(p[name]) for p in args.inputs]
    if args.merge_base:
        return list(deltas), weights
    if args.base is not None:
        weights.insert(args.base_index, float(args.base[name]))
    return models(base, deltas, args), weights


def emit(result: torch.Tensor, like: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """``result`` in ``like``'s dtype, written into ``out`` when given (any float dtype)."""
    if out is None:
        return result.to(like.dtype)
    if tuple(out.shape) != tuple(like.shape):
        raise MergeError(
            f"out has shape {tuple(out.shape)} but the merged tensor has shape {tuple(like.shape)}"
        )
    if not out.is_floating_point():
        raise MergeError(f"out must be a floating-point tensor, got {out.dtype}")
    out.copy_(result.to(like.dtype).reshape(like.shape))
    return out
