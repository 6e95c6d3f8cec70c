"""Sparsification of task vectors over precomputed ranks and noise, without bool tensors.

mergekit 0.1.5 semantics (``mergekit/sparsify.py``), expressed without sorting or drawing
random numbers at merge time:

- ``magnitude`` (TIES): density >= 1 keeps all; density <= 0 keeps none; otherwise the
  first ``k = max(1, int(density * n))`` entries of mergekit's magnitude order are kept;
- ``magnitude_outliers`` (breadcrumbs): of mergekit's ascending magnitude order, keep
  positions ``[n_bot, n_bot + int(density * n))`` with ``n_bot = max(0, n - int(density * n)
  - int(gamma * n))`` (fewer outliers dropped when they would not leave enough);
- ``random`` (DARE): keep each element with probability ``density``;
- ``della_magprune``: keep with probability ``density - epsilon + 2 * epsilon * r / (m - 1)``
  where ``r`` is the element's ascending ``|delta|`` rank in its row of length ``m``.

With ``rescale`` the kept values are multiplied by ``sum |delta| / sum |kept|`` (L1), unless
either sum is below 1e-7, as mergekit's ``rescaled_masked_tensor``.

**Ties at a cut.** Task vectors of bf16 checkpoints take few distinct values, so many
coordinates share the magnitude at the top-k cut, and which of them survive decides the
merge. mergekit orders with torch's default (unstable) sort of ``|delta|`` in float32 on the
CPU (``argsort(descending=True)`` for TIES, ``sort()`` ascending for breadcrumbs); its order
among equal values depends on the whole tensor, so the one definition here is that same
sort. Given each element's position in it (its rank, :func:`~._aux.magnitude_rank`), a
cut keeps ``lo <= rank < hi``: one integer comparison per element, exactly mergekit's
coordinates. The engine computes ranks once for all trials. A one-off merge first selects
the cut values in linear time (``torch.kthvalue``): when they differ from their
neighbours every sort keeps the same set, a magnitude threshold, and no sort is needed;
only when equal values straddle a cut is mergekit's sort run (at once for task vectors
that are visibly quantized). Kept zeros change nothing, so a tie of zeros needs no sort.

Kernels apply thresholds with ``hardshrink`` and integer cuts (ranks, DARE's noise) as
``clamp(hi - v, 0, 1)`` (ranks in int32, exact at any size): no bool tensors, which are
several times slower on CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from evomerge.merge.methods._aux import (
    NOISE_LEVELS,
    SourceAux,
    chunks,
    window_ranks,
)
from evomerge.merge.methods._workspace import Workspace

__all__ = [
    "RESCALE_EPS",
    "Keep",
    "bernoulli_keep",
    "della_keep",
    "emit_kept",
    "kept_at",
    "kept_l1",
    "magnitude_keep",
    "outlier_keep",
    "work_dtype",
]

RESCALE_EPS = 1e-7
_HALF = NOISE_LEVELS // 2


@dataclass(frozen=True, eq=False)
class Keep:
    """Which elements of one task vector survive sparsification.

    ``mag``: ``above < |x| < below`` (``below`` None: no upper bound). ``rank``:
    ``lo <= ranks < hi`` (``ranks``: each element's position in mergekit's magnitude
    order, or, for one cut, any int32 that lies in ``[lo, hi)`` exactly there).
    ``noise``: ``noise < threshold``. ``della``: ``noise < a + b * row_rank``.
    """

    kind: Literal["all", "none", "mag", "rank", "noise", "della"]
    above: float = -1.0
    below: float | None = None
    ranks: torch.Tensor | None = None
    lo: int = 0
    hi: int = 0
    threshold: int = 0
    a: float = 0.0
    b: float = 0.0


ALL = Keep("all")
NONE = Keep("none")

_SAMPLE = 4096


def _quantized(flat: torch.Tensor) -> bool:
    """Whether ``flat``'s magnitudes take few distinct values (a task vector of bf16
    checkpoints), judged on an evenly spaced sample. Only a shortcut: whichever way this
    goes, the kept coordinates are the same; it saves the linear-time selections that a
    tie at the cut would make useless."""
    n = flat.numel()
    if n < 2 * _SAMPLE:
        return False
    sample = flat[:: n // _SAMPLE].abs()
    sample = sample[sample != 0]
    return sample.numel() > 64 and torch.unique(sample).numel() < sample.numel() // 2


class _Cuts:
    """Magnitudes at given positions of mergekit's order, by linear-time selection."""

    def __init__(self, flat: torch.Tensor, *, descending: bool) -> None:
        self.mag = flat.abs().float()
        self.n = flat.numel()
        self.descending = descending

    def value(self, p: int) -> float:
        k = self.n - p if self.descending else p + 1  # kthvalue counts from the smallest
        return float(torch.kthvalue(self.mag, k).values)


def magnitude_keep(flat: torch.Tensor, ranks: torch.Tensor | None, density: float) -> Keep:
    """Top ``k = max(1, int(density * n))`` by magnitude, as mergekit's ``magnitude``.

    ``ranks`` (:func:`~._aux.magnitude_rank` of ``flat``) makes it ``rank < k``; without,
    the cut is selected in linear time and mergekit's sort run only if ties straddle it.
    """
    n = flat.numel()
    if density >= 1:
        return ALL
    if density <= 0 or n == 0:
        return NONE
    k = max(1, int(density * n))
    if k >= n:
        return ALL
    if ranks is None and not _quantized(flat):
        cuts = _Cuts(flat, descending=True)
        last, first_out = cuts.value(k - 1), cuts.value(k)
        if last > first_out or first_out == 0:  # no tie at the cut, or only zeros tied
            return Keep("mag", above=first_out)
    if ranks is None:
        ranks = window_ranks(flat, 0, k, descending=True)
    return Keep("rank", ranks=ranks, lo=0, hi=k)


def outlier_keep(
    flat: torch.Tensor, ranks: torch.Tensor | None, density: float, gamma: float
) -> Keep:
    """mergekit's ``magnitude_outliers``: ascending-order positions ``[n_bot, n_bot + target)``.

    ``ranks``: :func:`~._aux.ascending_rank` of ``flat`` (or None, as :func:`magnitude_keep`).
    """
    n = flat.numel()
    if density >= 1:
        return ALL
    target = int(density * n)
    n_top = int(gamma * n)
    n_bot = max(0, n - target - n_top)
    start, stop = min(n_bot, n), min(n_bot + target, n)
    if stop <= start:
        return NONE
    if start == 0 and stop == n:
        return ALL
    if ranks is None and not _quantized(flat):
        cuts = _Cuts(flat, descending=False)
        above, below, tie = -1.0, None, False
        if start > 0:
            above = cuts.value(start - 1)
            tie = cuts.value(start) == above and above > 0
        if stop < n:
            below = cuts.value(stop)
            if below == 0:
                return NONE  # everything kept is zero
            tie = tie or cuts.value(stop - 1) == below
        if not tie:
            return Keep("mag", above=above, below=below)
    if ranks is None:
        ranks = window_ranks(flat, start, stop, descending=False)
    return Keep("rank", ranks=ranks, lo=start, hi=stop)


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


def _below_float(x: float, dtype: torch.dtype) -> float:
    """The largest ``dtype`` value below ``x`` (so ``|v| > result`` means ``|v| >= x``)."""
    t = torch.tensor(x, dtype=dtype)
    return float(torch.nextafter(t, torch.zeros((), dtype=dtype)))


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
        _shrink(dst, d, keep.above)
        if keep.below is not None:  # drop |x| >= below
            tmp = ws.get("shrink", (e - s,), dst.dtype, dst.device)
            _shrink(tmp, dst, _below_float(keep.below, dst.dtype))
            dst.sub_(tmp)
    elif keep.kind == "rank":  # integer arithmetic: ranks above 2^24 are not exact floats
        assert keep.ranks is not None, "a rank cut needs its ranks"
        r = keep.ranks[s:e]
        mi = ws.get("rank_mask", (e - s,), torch.int32, dst.device)
        torch.sub(ws.scalar(keep.hi, torch.int32, dst.device), r, out=mi)
        mi.clamp_(0, 1)  # 1 where rank < hi
        if keep.lo > 0:
            li = ws.get("rank_lo", (e - s,), torch.int32, dst.device)
            torch.sub(r, ws.scalar(keep.lo - 1, torch.int32, dst.device), out=li)
            mi.mul_(li.clamp_(0, 1))  # and rank >= lo
        m = ws.get("mask", (e - s,), dst.dtype, dst.device)
        m.copy_(mi)
        torch.mul(d, m, out=dst)
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


def kept_at(values: torch.Tensor, idx: torch.Tensor, keep: Keep, aux: SourceAux) -> torch.Tensor:
    """bool ``[m]``: whether the elements at flat positions ``idx`` (values ``values``) are
    kept; the plain rule, for tests to compare masks with."""
    if keep.kind == "all":
        return torch.ones(idx.shape, dtype=torch.bool, device=idx.device)
    if keep.kind == "none":
        return torch.zeros(idx.shape, dtype=torch.bool, device=idx.device)
    if keep.kind == "mag":
        mag = values.abs().float()
        kept = mag > keep.above
        if keep.below is not None:
            kept &= mag < keep.below
        return kept
    if keep.kind == "rank":
        assert keep.ranks is not None
        r = keep.ranks[idx]
        return (r >= keep.lo) & (r < keep.hi)
    assert aux.noise is not None, "DARE and DELLA need their noise"
    noise = aux.noise[idx]
    if keep.kind == "noise":
        return noise < keep.threshold
    assert aux.row_rank is not None, "DELLA needs row ranks"
    return noise < keep.a + keep.b * aux.row_rank[idx].float()


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
