"""Sparsification of task vectors over precomputed orders and noise, without bool tensors.

mergekit 0.1.5 semantics (``mergekit/sparsify.py``), expressed without sorting or drawing
random numbers at merge time:

- ``magnitude`` (TIES): density >= 1 keeps all; density <= 0 keeps none; otherwise the
  ``k = max(1, int(density * n))`` largest ``|delta|`` are kept;
- ``magnitude_outliers`` (breadcrumbs): drop the ``int(gamma * n)`` largest, keep the next
  ``int(density * n)`` (fewer outliers dropped when they would not leave enough);
- ``random`` (DARE): keep each element with probability ``density``;
- ``della_magprune``: keep with probability ``density - epsilon + 2 * epsilon * r / (m - 1)``
  where ``r`` is the element's ascending ``|delta|`` rank in its row of length ``m``.

With ``rescale`` the kept values are multiplied by ``sum |delta| / sum |kept|`` (L1), unless
either sum is below 1e-7, as mergekit's ``rescaled_masked_tensor``.

Magnitude masks keep the elements at positions ``[lo, hi)`` of the stable descending order
of ``|delta|``. They are applied with ``hardshrink`` against the boundary magnitudes (one
fast elementwise op, no rank array read). Ties at a boundary (common: task vectors of bf16
checkpoints take few distinct values) are resolved as a stable sort does, by position: up
to a cut position the threshold includes the tied value, after it excludes it. DARE masks
are ``clamp(T - noise, 0, 1)``: float ops only, because comparisons producing bool tensors
are several times slower on CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from evomerge.merge.methods._aux import NOISE_LEVELS, SourceAux, chunks
from evomerge.merge.methods._workspace import Workspace

__all__ = [
    "RESCALE_EPS",
    "Keep",
    "bernoulli_keep",
    "della_keep",
    "emit_kept",
    "kept_l1",
    "magnitude_keep",
    "outlier_keep",
    "work_dtype",
]

RESCALE_EPS = 1e-7
_HALF = NOISE_LEVELS // 2


@dataclass(frozen=True)
class Keep:
    """Which elements of one task vector survive sparsification.

    ``mag``: positions ``[lo, hi)`` of the stable descending ``|x|`` order, as two cuts. An
    element passes the lower cut if ``|x| > below``, or ``|x| == below`` and its flat position
    is ``<= below_cut`` (a stable sort orders ties by position); it is removed by the upper
    cut (when ``top`` is set) if ``|x| > top``, or ``|x| == top`` and position ``<= top_cut``.
    ``noise``: ``noise < threshold``. ``della``: ``noise < a + b * row_rank``.
    """

    kind: Literal["all", "none", "mag", "noise", "della"]
    below: float = -1.0
    below_cut: int = -1
    top: float | None = None
    top_cut: int = -1
    threshold: int = 0
    a: float = 0.0
    b: float = 0.0


ALL = Keep("all")
NONE = Keep("none")


def _mag_at(flat: torch.Tensor, order: torch.Tensor, j: int) -> float:
    return abs(float(flat[order[j]]))


def _below_float(x: float, dtype: torch.dtype) -> float:
    """The largest ``dtype`` value below ``x`` (so ``|v| > result`` means ``|v| >= x``)."""
    t = torch.tensor(x, dtype=dtype)
    return float(torch.nextafter(t, torch.zeros((), dtype=dtype)))


def rank_range_keep(flat: torch.Tensor, order: torch.Tensor, lo: int, hi: int) -> Keep:
    """Keep order positions ``[lo, hi)`` (``order``: stable descending ``|flat|``)."""
    n = flat.numel()
    if hi <= lo:
        return NONE
    if lo == 0 and hi >= n:
        return ALL
    below, below_cut = -1.0, -1
    if hi < n:
        below = _mag_at(flat, order, hi)  # first excluded magnitude
        if _mag_at(flat, order, hi - 1) == below:  # a run of ties straddles the cut
            below_cut = int(order[hi - 1])
    top, top_cut = None, -1
    if lo > 0:
        top = _mag_at(flat, order, lo - 1)  # last excluded outlier
        if top == 0:
            return NONE  # everything at or after lo is zero
        top_cut = int(order[lo - 1])
    return Keep("mag", below=below, below_cut=below_cut, top=top, top_cut=top_cut)


def magnitude_keep(flat: torch.Tensor, order: torch.Tensor | None, density: float) -> Keep:
    """Top ``k = max(1, int(density * n))`` by magnitude; ``order`` (the stable descending
    argsort) makes it a lookup, without it a linear-time selection finds the same cut."""
    n = flat.numel()
    if density >= 1:
        return ALL
    if density <= 0 or n == 0:
        return NONE
    k = max(1, int(density * n))
    if order is None:
        return top_k_keep(flat, k)
    return rank_range_keep(flat, order, 0, k)


def top_k_keep(flat: torch.Tensor, k: int) -> Keep:
    """The Keep of the ``k`` largest ``|flat|`` (ties by position), in O(n) with no sort.

    Equals ``rank_range_keep(flat, stable_descending_order, 0, k)``: the cut is the
    (k+1)-th largest magnitude; when the k-th equals it, the tied elements kept are the
    first ``k - #(|x| > cut)`` of them by flat position.
    """
    n = flat.numel()
    if k >= n:
        return ALL
    mag = flat.abs()
    below = float(torch.kthvalue(mag.float() if mag.dtype != torch.float64 else mag, n - k).values)
    above = int((mag > below).sum())
    if above >= k:  # no tie at the cut: exactly k are above it
        return Keep("mag", below=below)
    tied = torch.nonzero(mag == below).view(-1)  # [t] flat positions, ascending
    return Keep("mag", below=below, below_cut=int(tied[k - above - 1]))


def outlier_keep(
    flat: torch.Tensor, order: torch.Tensor | None, density: float, gamma: float
) -> Keep:
    n = flat.numel()
    if density >= 1:
        return ALL
    target = int(density * n)
    n_top = int(gamma * n)
    n_bot = max(0, n - target - n_top)
    # mergekit keeps ascending positions [n_bot, n_bot + target); descending: [n - stop, n - start)
    start, stop = min(n_bot, n), min(n_bot + target, n)
    if stop <= start:
        return NONE
    assert order is not None
    return rank_range_keep(flat, order, n - stop, n - start)


def _noise_threshold(p: float) -> float:
    """Keep iff ``u < p`` with ``u = (noise + 32768.5) / 65536``: ``noise < p * 65536 - 32768.5``."""
    return p * NOISE_LEVELS - _HALF - 0.5


def bernoulli_keep(density: float) -> Keep:
    if density >= 1:
        return ALL
    t = math.ceil(_noise_threshold(density))  # integer noise: noise < x  <=>  noise < ceil(x)
    if t <= -_HALF:
        return NONE
    if t >= _HALF:
        return ALL
    return Keep("noise", threshold=t)


def della_keep(density: float, epsilon: float, row_len: int) -> Keep:
    if density >= 1:
        return ALL
    if density <= 0:
        return NONE
    if row_len <= 1:  # mergekit divides 0 by 0 here; every element gets the mean probability
        return Keep("della", a=_noise_threshold(density), b=0.0)
    return Keep(
        "della", a=_noise_threshold(density - epsilon), b=2 * epsilon * NOISE_LEVELS / (row_len - 1)
    )


def _shrink(dst: torch.Tensor, src: torch.Tensor, lam: float) -> None:
    """``dst = src where |src| > lam, else 0`` (hardshrink; widening first across dtypes)."""
    if src.dtype == dst.dtype:
        torch.ops.aten.hardshrink.out(src, lam, out=dst)
    else:  # hardshrink has no mixed-dtype form: widen (exact), then shrink in place
        dst.copy_(src)
        torch.ops.aten.hardshrink.out(dst, lam, out=dst)


def _cut(dst: torch.Tensor, src: torch.Tensor, value: float, cut: int, s: int) -> None:
    """``dst = src`` where ``|x| > value``, or ``|x| == value`` at flat position ``<= cut``."""
    c = src.numel()
    p = min(max(cut + 1 - s, 0), c)  # chunk-local count of positions <= cut
    if p == 0:
        _shrink(dst, src, value)
        return
    at_least = _below_float(value, src.dtype)  # |x| > at_least  <=>  |x| >= value
    if p == c:
        _shrink(dst, src, at_least)
        return
    _shrink(dst[:p], src[:p], at_least)
    _shrink(dst[p:], src[p:], value)


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype kernels compute chunks in: float32 for 16-bit inputs (CPU half ops are slow)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def emit_kept(
    dst: torch.Tensor, d: torch.Tensor, keep: Keep, aux: SourceAux, s: int, e: int, ws: Workspace
) -> None:
    """``dst = d`` where kept, 0 elsewhere, for the chunk ``[s, e)`` (``d`` is that chunk)."""
    if keep.kind == "all":
        dst.copy_(d)
    elif keep.kind == "none":
        dst.zero_()
    elif keep.kind == "mag":
        _cut(dst, d, keep.below, keep.below_cut, s)
        if keep.top is not None:
            tmp = ws.get("shrink", (e - s,), dst.dtype, dst.device)
            _cut(tmp, dst, keep.top, keep.top_cut, s)
            dst.sub_(tmp)
    elif keep.kind == "noise":
        assert aux.noise is not None, "DARE needs its noise"
        m = ws.get("mask", (e - s,), dst.dtype, dst.device)
        m.copy_(aux.noise[s:e])
        torch.sub(ws.scalar(float(keep.threshold), dst.dtype, dst.device), m, out=m)
        m.clamp_(0, 1)  # 1 where noise < threshold (integers), else 0
        torch.mul(d, m, out=dst)
    else:  # della: probabilities vary per element; a bool mask is simplest
        assert aux.noise is not None and aux.row_rank is not None, "DELLA needs noise and row ranks"
        thr = ws.get("thr", (e - s,), torch.float32, dst.device)
        torch.mul(aux.row_rank[s:e], keep.b, out=thr)
        thr.add_(keep.a)
        mb = ws.get("bmask", (e - s,), torch.bool, dst.device)
        torch.lt(aux.noise[s:e], thr, out=mb)
        torch.mul(d, mb, out=dst)


def kept_l1(flat: torch.Tensor, keep: Keep, aux: SourceAux, ws: Workspace) -> float:
    """``sum |delta|`` over the kept elements (``flat`` contiguous)."""
    if keep.kind == "none":
        return 0.0
    if keep.kind == "all":
        assert aux.l1 is not None
        return aux.l1
    if keep.kind == "noise" and aux.noise_l1 is not None:
        return float(aux.noise_l1[keep.threshold + _HALF])
    total = 0.0
    for s, e in chunks(flat.numel(), flat.device):
        tmp = ws.get("l1tmp", (e - s,), work_dtype(flat.dtype), flat.device)
        emit_kept(tmp, flat[s:e], keep, aux, s, e, ws)
        tmp.abs_()
        total += float(tmp.sum())
    return total
