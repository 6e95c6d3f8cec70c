"""sce, ram, ramplus_tl: merges that select coordinates across the task vectors.

mergekit 0.1.5's semantics, per tensor, in the computation dtype, with ``tau_i = source_i -
base`` stacked as ``T [N, ...]``:

- ``sce`` (select, calculate, erase): with ``select_topk < 1`` keep only the
  ``int(nonzero(var) * select_topk)`` coordinates where the task vectors vary most
  (``var`` over the sources, population variance; ties at the cut kept as ``torch.topk``
  keeps them, found in linear time when there are none); then TIES' sign election
  (``sign(tau_i) == sign of sum_i tau_i``, ``>= 0`` counting as +); each source weighs
  ``w_i = mean(tau_i^2) / sum_j mean(tau_j^2)`` (``1/N`` when the sum is below 1e-6);
  ``base + sum_i w_i m_i tau_i / max(sum_i w_i m_i, 1e-6)`` with ``m_i`` the election mask.
- ``ram`` (reinforced agent merging): a coordinate moved by one source (``|tau_i| >
  epsilon``) takes that source's value; moved by several, their mean.
- ``ramplus_tl``: as ``ram``, with each source's unique coordinates scaled by
  ``1 + r * min(max(rho_i, 0), alpha)``, ``rho_i`` = its shared over its unique coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from evomerge.merge.methods._inputs import emit, stacked
from evomerge.merge.methods._spec import MergeArgs

__all__ = ["ram", "ramplus_tl", "sce", "sce_mask"]


def _topk_mask(values: torch.Tensor, k: int) -> torch.Tensor:
    """bool, ``values``' shape: the ``k`` largest entries, the ones ``torch.topk`` returns.

    When the k-th and (k+1)-th largest differ, every selection agrees and a linear-time
    threshold finds it; otherwise ``torch.topk`` itself decides which tied entries it keeps.
    """
    flat = values.reshape(-1)
    n = flat.numel()
    if k >= n:
        return torch.ones_like(values, dtype=torch.bool)
    kth = torch.kthvalue(flat, n - k + 1).values  # the k-th largest
    if kth > torch.kthvalue(flat, n - k).values:  # no tie at the cut
        return values >= kth
    mask = torch.zeros(n, dtype=torch.bool, device=values.device)
    mask[torch.topk(flat, k=k, largest=True).indices] = True
    return mask.view(values.shape)


def sce_mask(tvs: torch.Tensor, select_topk: float) -> torch.Tensor:
    """bool ``[...]``: the coordinates sce keeps, by variance across the task vectors ``[N, ...]``."""
    if select_topk <= 0:
        return torch.zeros(tvs.shape[1:], dtype=torch.bool, device=tvs.device)
    if select_topk >= 1:
        return torch.ones(tvs.shape[1:], dtype=torch.bool, device=tvs.device)
    var = torch.var(tvs, dim=0, unbiased=False)
    k = int(torch.count_nonzero(var) * select_topk)  # the same float arithmetic as mergekit
    if k == 0:
        return torch.zeros_like(var, dtype=torch.bool)
    return _topk_mask(var.abs(), k)


def _sign_agreement(tvs: torch.Tensor) -> torch.Tensor:
    """bool ``[N, ...]``: ``sign(tau_i)`` equals the sign of the sum (zeros never agree)."""
    majority = (tvs.sum(dim=0) >= 0).to(tvs.dtype) * 2 - 1
    return tvs.sign() == majority


def _sce_weights(tvs: torch.Tensor) -> torch.Tensor:
    weights = tvs.square().reshape(tvs.shape[0], -1).mean(dim=1)  # [N]
    total = float(torch.sum(weights))
    if abs(total) < 1e-6:
        return torch.ones_like(weights) / weights.shape[0]
    return weights / total


def sce(
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
    """SCE: select high-variance coordinates, weigh sources by energy, erase minority signs."""
    if len(deltas) == 0:
        return emit(base, base, out)
    tvs = stacked(deltas)  # [N, ...]
    select_topk = float(args.globals["select_topk"])
    if select_topk < 1:
        tvs = tvs * sce_mask(tvs, select_topk).to(tvs.dtype).unsqueeze(0)
    agree = _sign_agreement(tvs)
    weights = _sce_weights(tvs).view(-1, *([1] * (tvs.dim() - 1)))  # [N, 1, ...]
    erased = weights * agree
    merged = (tvs * erased).sum(dim=0)
    return emit(base + merged / erased.sum(dim=0).clamp(min=1e-6), base, out)


def _ram_parts(
    deltas: torch.Tensor | Sequence[torch.Tensor], epsilon: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(tau [N, n], moved [N, n], counts [1, n], shared [1, n], unique [1, n])``."""
    tv = stacked(deltas)
    tv = tv.view(tv.shape[0], -1)  # [N, n]
    moved = tv.abs() > epsilon
    counts = moved.sum(dim=0, keepdim=True)  # [1, n]: sources moving each coordinate
    return tv, moved, counts, counts > 1, counts == 1


def ram(
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
    """RAM: unique coordinates as they are, shared ones averaged over the sources moving them."""
    if len(deltas) == 0:
        return emit(base, base, out)
    tv, moved, counts, shared, unique = _ram_parts(deltas, float(args.globals["epsilon"]))
    tv_z = tv * moved
    merged = (tv_z * unique + tv_z * shared / counts.clamp(min=1)).sum(dim=0, keepdim=True)
    return emit(base + merged.reshape_as(base), base, out)


def ramplus_tl(
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
    """RAM+ (tensor-local): RAM with each source's unique coordinates reinforced."""
    if len(deltas) == 0:
        return emit(base, base, out)
    g = args.globals
    epsilon = float(g["epsilon"])
    tv, moved, counts, shared, unique = _ram_parts(deltas, epsilon)
    n_shared = (moved & shared).sum(dim=1)  # [N]
    n_unique = (moved & unique).sum(dim=1)  # [N]
    rho = n_shared / n_unique.clamp(min=epsilon)
    lam = 1 + float(g["r"]) * rho.clamp(min=0, max=float(g["alpha"]))  # [N]
    tv_z = tv * moved
    merged = (tv_z * unique * lam.unsqueeze(-1) + tv_z * shared / counts.clamp(min=1)).sum(
        dim=0, keepdim=True
    )
    return emit(base + merged.reshape_as(base), base, out)
