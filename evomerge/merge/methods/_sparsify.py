"""Sparsification of task vectors over precomputed orders and noise, without bool tensors.

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
sort (:func:`~._aux.magnitude_order`, :func:`~._aux.ascending_order`): the same torch build
keeps the same coordinates. A :class:`Keep` holds the kept set as an open magnitude
interval ``above < |x| < below`` plus ``extra``, the sorted flat positions of the tied
coordinates at a cut that the order keeps. Without a precomputed order, a linear-time
selection (``torch.kthvalue``) finds the cut values; only when equal values straddle a cut
(where selections disagree) is mergekit's sort run. Kept zeros change nothing (a zero
never joins a sign consensus nor an L1 norm), so a tie of zeros needs no ``extra``.

Kernels apply the interval with ``hardshrink`` (one fast elementwise op), then recompute
the few ``extra`` coordinates (:func:`kept_at`). DARE masks are ``clamp(T - noise, 0, 1)``:
float ops only, because comparisons producing bool tensors are several times slower on CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from evomerge.merge.methods._aux import (
    NOISE_LEVELS,
    SourceAux,
    ascending_order,
    chunks,
    magnitude_order,
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

    ``mag``: ``above < |x| < below`` (``below`` None: no upper bound), plus the flat
    positions ``extra`` (ascending int64; coordinates tied at a cut that mergekit's order
    keeps; their ``|x|`` equals ``above`` or ``below``). ``noise``: ``noise < threshold``.
    ``della``: ``noise < a + b * row_rank``.
    """

    kind: Literal["all", "none", "mag", "noise", "della"]
    above: float = -1.0
    below: float | None = None
    extra: torch.Tensor | None = None
    threshold: int = 0
    a: float = 0.0
    b: float = 0.0


ALL = Keep("all")
NONE = Keep("none")


class _Ranked:
    """``|flat|`` by position in mergekit's order (descending or ascending magnitude).

    Values come from ``order`` when it is known; otherwise by linear-time selection, and
    the order is sorted (once) only when :attr:`order` is asked for.
    """

    def __init__(self, flat: torch.Tensor, order: torch.Tensor | None, *, descending: bool):
        self.flat = flat
        self.n = flat.numel()
        self.descending = descending
        self._order = order
        self._mag: torch.Tensor | None = None

    @property
    def order(self) -> torch.Tensor:
        if self._order is None:
            sort = magnitude_order if self.descending else ascending_order
            self._order = sort(self.flat)
        return self._order

    def value(self, p: int) -> float:
        """The magnitude at position ``p`` of the order."""
        if self._order is not None:
            return abs(float(self.flat[int(self._order[p])]))
        if self._mag is None:
            self._mag = self.flat.abs().float()
        k = self.n - p if self.descending else p + 1  # kthvalue counts from the smallest
        return float(torch.kthvalue(self._mag, k).values)

    def values(self, positions: torch.Tensor) -> torch.Tensor:
        """Magnitudes (float32) at ``positions`` of the order."""
        return self.flat[self.order[positions].long()].abs().float()

    def run_edge(self, j: int, step: int) -> int:
        """The last position from ``j`` going by ``step`` (+1 or -1) whose magnitude equals
        that at ``j`` (values are monotone along the order: a run of ties is contiguous)."""
        v = self.value(j)
        limit = j if step < 0 else self.n - 1 - j
        if limit == 0:
            return j
        offs = sorted({1 << i for i in range(limit.bit_length())} | {limit})
        offs = [o for o in offs if o <= limit]
        probes = torch.tensor([j + step * o for o in offs])
        differs = (self.values(probes) != v).nonzero()
        if differs.numel() == 0:
            return j + step * limit  # the run reaches the end of the order
        i = int(differs[0])
        near = j + step * offs[i - 1] if i > 0 else j  # equal to v
        far = j + step * offs[i]  # differs from v
        window = torch.arange(near, far, step)
        differs = (self.values(window) != v).nonzero()
        return int(window[int(differs[0])]) - step if differs.numel() else far - step


def _extra(order: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Order positions ``[lo, hi)`` as ascending int64 flat positions."""
    return torch.sort(order[lo:hi].long()).values


def magnitude_keep(flat: torch.Tensor, order: torch.Tensor | None, density: float) -> Keep:
    """Top ``k = max(1, int(density * n))`` by magnitude, as mergekit's ``magnitude``.

    ``order`` (:func:`~._aux.magnitude_order` of ``flat``) makes the cut a lookup; without
    it the cut is selected in linear time and the order sorted only if ties straddle it.
    """
    n = flat.numel()
    if density >= 1:
        return ALL
    if density <= 0 or n == 0:
        return NONE
    k = max(1, int(density * n))
    if k >= n:
        return ALL
    ranked = _Ranked(flat, order, descending=True)
    last, first_out = ranked.value(k - 1), ranked.value(k)
    if last > first_out or first_out == 0:  # no tie at the cut, or only zeros tied
        return Keep("mag", above=first_out)
    start = ranked.run_edge(k - 1, -1)  # where the run of |x| == first_out begins
    return Keep("mag", above=first_out, extra=_extra(ranked.order, start, k))


def outlier_keep(
    flat: torch.Tensor, order: torch.Tensor | None, density: float, gamma: float
) -> Keep:
    """mergekit's ``magnitude_outliers``: ascending-order positions ``[n_bot, n_bot + target)``.

    ``order``: :func:`~._aux.ascending_order` of ``flat`` (or None, as :func:`magnitude_keep`).
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
    ranked = _Ranked(flat, order, descending=False)
    above, below = -1.0, None
    lower_tie = upper_tie = False
    if start > 0:
        above = ranked.value(start - 1)
        lower_tie = ranked.value(start) == above and above > 0
    if stop < n:
        below = ranked.value(stop)
        if below == 0:
            return NONE  # everything kept is zero
        upper_tie = ranked.value(stop - 1) == below
    if not (lower_tie or upper_tie):
        return Keep("mag", above=above, below=below)
    parts = []
    if lower_tie:
        parts.append(_extra(ranked.order, start, min(ranked.run_edge(start, +1) + 1, stop)))
    if upper_tie:
        parts.append(_extra(ranked.order, max(ranked.run_edge(stop - 1, -1), start), stop))
    extra = torch.unique(torch.cat(parts)) if len(parts) > 1 else parts[0]
    return Keep("mag", above=above, below=below, extra=extra)


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
    """``dst = d`` where kept, 0 elsewhere, for the chunk ``[s, e)`` (``d`` is that chunk).

    For ``mag`` keeps only the interval is applied: the ``extra`` coordinates are left at 0
    and recomputed afterwards with :func:`kept_at`.
    """
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
    """bool ``[m]``: whether the elements at flat positions ``idx`` (values ``values``) are kept.

    The complete rule (``extra`` included); used for the few coordinates tied at a cut, and
    by tests to compare masks.
    """
    if keep.kind == "all":
        return torch.ones(idx.shape, dtype=torch.bool, device=idx.device)
    if keep.kind == "none":
        return torch.zeros(idx.shape, dtype=torch.bool, device=idx.device)
    if keep.kind == "mag":
        mag = values.abs().float()
        kept = mag > keep.above
        if keep.below is not None:
            kept &= mag < keep.below
        if keep.extra is not None:
            kept |= torch.isin(idx, keep.extra.to(idx.device))
        return kept
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
    if keep.kind == "mag" and keep.extra is not None:  # the tied coordinates emit_kept left out
        total += float(flat[keep.extra.to(flat.device)].abs().float().sum())
    return total
