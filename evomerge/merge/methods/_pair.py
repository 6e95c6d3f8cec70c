"""nearswap and arcee_fusion: merges of the base with exactly one other model.

mergekit 0.1.5's semantics, per tensor, in the computation dtype, with ``x`` the other
model and ``tau = x - base``:

- ``nearswap``: take ``x``'s value where it is near the base: per coordinate
  ``w = clamp(t / max(|tau|, 1e-6), 0, 1)``, result ``w * x + (1 - w) * base``.
- ``arcee_fusion``: keep ``tau`` only where it matters: importance ``|tau| * KL(softmax(x)
  || softmax(base))`` (per row, last dim; 1e-8 added to both distributions), kept where it
  is at least ``median + 1.5 * IQR`` of the tensor's importances (quantiles read at
  ``floor(q * (n - 1))`` of the sorted values). mergekit estimates these quantiles from a
  random sample of 10^6 values for larger tensors; here they are exact at every size (the
  same for tensors up to 10^6 elements, which is where the parity tests hold).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from evomerge.merge.methods._inputs import emit
from evomerge.merge.methods._spec import MergeArgs

__all__ = ["arcee_fusion", "nearswap"]


def nearswap(
    base: torch.Tensor,
    deltas: torch.Tensor | Sequence[torch.Tensor],
    args: MergeArgs,
    *,
    aux: Sequence[Any] | None = None,
    out: torch.Tensor | None = None,
    workspace: Any = None,
    seed: int = 0,
    tensor_name: str = "",
) -> torch.Tensor:
    """Swap in the other model's values where they lie within ~t of the base."""
    (delta,) = list(deltas)
    x = base + delta
    weight = (float(args.globals["t"]) / delta.abs().clamp(min=1e-6)).clamp(min=0, max=1)
    return emit(weight * x + (1 - weight) * base, base, out)


def _quantiles(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q1, median, Q3 of ``values`` as mergekit reads them (no interpolation), in O(n)."""
    flat = values.reshape(-1)
    q = torch.tensor([0.25, 0.5, 0.75])
    positions = (q * (flat.numel() - 1)).long().tolist()  # 0-based, in ascending order
    q1, med, q3 = (torch.kthvalue(flat, p + 1).values for p in positions)
    return q1, med, q3


def arcee_fusion(
    base: torch.Tensor,
    deltas: torch.Tensor | Sequence[torch.Tensor],
    args: MergeArgs,
    *,
    aux: Sequence[Any] | None = None,
    out: torch.Tensor | None = None,
    workspace: Any = None,
    seed: int = 0,
    tensor_name: str = "",
) -> torch.Tensor:
    """Fuse the other model's changes where their importance is an outlier."""
    (delta,) = list(deltas)
    x = base + delta
    p = torch.softmax(x, dim=-1) + 1e-8
    q = torch.softmax(base, dim=-1) + 1e-8
    kl = torch.sum(p * torch.log(p / q), dim=-1, keepdim=True)
    importance = delta.abs() * kl
    q1, median, q3 = _quantiles(importance)
    mask = (importance >= median + 1.5 * (q3 - q1)).float()
    return emit(base + delta * mask, base, out)
