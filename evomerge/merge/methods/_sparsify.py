"""Sparsification of task vectors as masks over precomputed ranks and noise.

mergekit 0.1.5 semantics (``mergekit/sparsify.py``), expressed without sorting or drawing
random numbers at merge time:

- ``magnitude`` (TIES): density >= 1 keeps all; density <= 0 keeps none; otherwise the
  ``k = max(1, int(density * n))`` largest ``|delta|`` are kept: ``rank < k``;
- ``magnitude_outliers`` (breadcrumbs): drop the ``int(gamma * n)`` largest, keep the next
  ``int(density * n)`` (fewer outliers dropped when they would not leave enough);
- ``random`` (DARE): keep each element with probability ``density``: ``noise < T``;
- ``della_magprune``: keep with probability ``density - epsilon + 2 * epsilon * r / (m - 1)``
  where ``r`` is the element's ascending ``|delta|`` rank in its row of length ``m``.

With ``rescale`` the kept values are multiplied by ``sum |delta| / sum |kept|`` (L1), unless
either sum is below 1e-7, as mergekit's ``rescaled_masked_tensor``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from evomerge.merge.methods._aux import CHUNK, NOISE_LEVELS, SourceAux
from evomerge.merge.methods._workspace import Workspace

__all__ = [
    "RESCALE_EPS",
    "Keep",
    "bernoulli_keep",
    "della_keep",
    "kept_l1",
    "magnitude_keep",
    "mask_chunk",
    "outlier_keep",
]

RESCALE_EPS = 1e-7
_HALF = NOISE_LEVELS // 2


@dataclass(frozen=True)
class Keep:
    """Which elements of one task vector survive sparsification.

    ``rank``: ``lo <= rank < hi``; ``noise``: ``noise < threshold``; ``della``:
    ``noise < a + b * row_rank``; ``all``/``none``: everything/nothing.
    """

    kind: Literal["all", "none", "rank", "noise", "della"]
    lo: int = 0
    hi: int = 0
    threshold: int = 0
    a: float = 0.0
    b: float = 0.0


ALL = Keep("all")
NONE = Keep("none")


def magnitude_keep(n: int, density: float) -> Keep:
    if density >= 1:
        return ALL
    if density <= 0 or n == 0:
        return NONE
    return Keep("rank", lo=0, hi=max(1, int(density * n)))


def outlier_keep(n: int, density: float, gamma: float) -> Keep:
    if density >= 1:
        return ALL
    target = int(density * n)
    n_top = int(gamma * n)
    n_bot = max(0, n - target - n_top)
    # mergekit keeps ascending positions [n_bot, n_bot + target); rank is descending.
    start, stop = min(n_bot, n), min(n_bot + target, n)
    if stop <= start:
        return NONE
    return Keep("rank", lo=n - stop, hi=n - start)


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
    return Keep("della", a=_noise_threshold(density - epsilon), b=2 * epsilon * NOISE_LEVELS / (row_len - 1))


def mask_chunk(keep: Keep, aux: SourceAux, start: int, stop: int, ws: Workspace, tag: str = "") -> torch.Tensor:
    """The bool keep-mask of elements ``[start, stop)`` (a workspace view) for ``rank``/``noise``/``della``."""
    ref = aux.rank if keep.kind == "rank" else aux.noise
    assert ref is not None, f"sparsification {keep.kind!r} needs its precomputation"
    mb = ws.get("mask" + tag, (stop - start,), torch.bool, ref.device)
    if keep.kind == "rank":
        r = ref[start:stop]
        torch.lt(r, keep.hi, out=mb)
        if keep.lo > 0:
            lo = ws.get("mask2" + tag, (stop - start,), torch.bool, ref.device)
            torch.ge(r, keep.lo, out=lo)
            mb.logical_and_(lo)
    elif keep.kind == "noise":
        torch.lt(ref[start:stop], keep.threshold, out=mb)
    elif keep.kind == "della":
        assert aux.row_rank is not None, "DELLA needs row ranks"
        thr = ws.get("thr" + tag, (stop - start,), torch.float32, ref.device)
        torch.mul(aux.row_rank[start:stop], keep.b, out=thr)
        thr.add_(keep.a)
        torch.lt(ref[start:stop], thr, out=mb)
    else:  # pragma: no cover - callers handle all/none
        raise AssertionError(keep.kind)
    return mb


def kept_l1(delta: torch.Tensor, keep: Keep, aux: SourceAux, ws: Workspace) -> float:
    """``sum |delta|`` over the kept elements (``delta`` flat and contiguous)."""
    if keep.kind == "none":
        return 0.0
    if keep.kind == "all":
        assert aux.l1 is not None
        return aux.l1
    if keep.kind == "noise" and aux.noise_l1 is not None:
        return float(aux.noise_l1[keep.threshold + _HALF])
    total = 0.0
    for s in range(0, delta.numel(), CHUNK):
        e = min(delta.numel(), s + CHUNK)
        mb = mask_chunk(keep, aux, s, e, ws)
        tmp = ws.get("l1tmp", (e - s,), delta.dtype, delta.device)
        torch.where(mb, delta[s:e], ws.zero(delta.dtype, delta.device), out=tmp)
        if tmp.dtype in (torch.float16, torch.bfloat16):
            total += float(torch.linalg.vector_norm(tmp.float(), ord=1))
        else:
            total += float(torch.linalg.vector_norm(tmp, ord=1))
    return total
