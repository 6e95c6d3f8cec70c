"""Additive sufficient statistics of one tensor's task vectors (counts and sums of squares).

Every figure of the analysis is a ratio or square root of sums that add across tensors,
so one float64 vector per tensor (laid out by :class:`StatLayout`) is all that is kept;
per-layer, per-module and whole-model figures are sums of these vectors. Counts are
stored as float64, exact up to 2**53 coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np
import torch

__all__ = ["StatLayout", "raw_stats", "tensor_stats"]

_CHUNK = 1 << 20  # coordinates per chunk: bounds the [T, chunk] temporaries (a few MiB)


class StatLayout:
    """Index of every statistic for vectors ``names``, a joint set and the given pairs.

    Keys: ``("numel",)``; per vector ``("vec", v, s)`` for s in l2_sq, raw_l2_sq,
    unchanged, nonzero; for the joint set (all vectors) ``("joint", s)`` for s in multi,
    conflict and ``("joint", v, s)`` for s in cl2_sq, ties_sq; per pair ``("pair", i, s)``
    for s in dot, multi, conflict and ``("pair", i, v, s)`` for s in cl2_sq, ties_sq.
    """

    def __init__(
        self, names: Sequence[str], *, joint: bool, pairs: Sequence[tuple[str, str]]
    ) -> None:
        self.names = list(names)
        self.joint = joint
        self.pairs: list[tuple[str, str]] = [(a, b) for a, b in pairs]
        keys: list[tuple[object, ...]] = [("numel",)]
        for v in self.names:
            keys += [("vec", v, s) for s in ("l2_sq", "raw_l2_sq", "unchanged", "nonzero")]
        if joint:
            keys += [("joint", "multi"), ("joint", "conflict")]
            for v in self.names:
                keys += [("joint", v, "cl2_sq"), ("joint", v, "ties_sq")]
        for i, (a, b) in enumerate(self.pairs):
            keys += [("pair", i, s) for s in ("dot", "multi", "conflict")]
            for v in (a, b):
                keys += [("pair", i, v, "cl2_sq"), ("pair", i, v, "ties_sq")]
        self.keys = keys
        self.index = {k: j for j, k in enumerate(keys)}

    @classmethod
    def all_pairs(cls, names: Sequence[str], *, joint: bool = True) -> StatLayout:
        return cls(names, joint=joint, pairs=list(combinations(names, 2)))

    def __len__(self) -> int:
        return len(self.keys)

    def zeros(self) -> np.ndarray:
        return np.zeros(len(self.keys), dtype=np.float64)

    def get(self, sums: np.ndarray, *key: object) -> float:
        return float(sums[..., self.index[key]])


def raw_stats(layout: StatLayout, out: np.ndarray, name: str, tau: torch.Tensor) -> float:
    """Record the untrimmed figures of vector ``name`` (``||tau||^2`` and exact zeros); returns ``||tau||^2``."""
    flat = tau.reshape(-1)
    sq = 0.0
    for start in range(0, flat.numel(), _CHUNK):
        c = flat[start : start + _CHUNK]
        sq += float((c * c).sum())
    out[layout.index[("vec", name, "raw_l2_sq")]] += sq
    out[layout.index[("vec", name, "unchanged")]] += flat.numel() - int(torch.count_nonzero(flat))
    return sq


def tensor_stats(layout: StatLayout, out: np.ndarray, taus: Sequence[torch.Tensor]) -> None:
    """Add the statistics of one tensor's (trimmed) task vectors, in ``layout.names`` order.

    Float32 arithmetic on 1-D chunks (elementwise float ops are several times faster than
    bool masks in torch on CPU); sums of squares are float32 cascade sums per chunk,
    accumulated in float64; dot products are summed in float64.
    """
    idx = layout.index
    row = {v: i for i, v in enumerate(layout.names)}
    flats = [t.reshape(-1) for t in taus]
    n = flats[0].numel()
    out[idx[("numel",)]] += n
    sets: list[tuple[tuple[object, ...], tuple[int, ...]]] = []
    if layout.joint:
        sets.append((("joint",), tuple(range(len(flats)))))
    sets += [(("pair", p), (row[a], row[b])) for p, (a, b) in enumerate(layout.pairs)]
    for start in range(0, n, _CHUNK):
        xs = [f[start : start + _CHUNK] for f in flats]  # T x [chunk] views
        sqs = [x * x for x in xs]
        nonzero = [int(torch.count_nonzero(x)) for x in xs]
        for v, i in row.items():
            out[idx[("vec", v, "l2_sq")]] += float(sqs[i].sum())
            out[idx[("vec", v, "nonzero")]] += nonzero[i]
        done: dict[tuple[int, ...], tuple[int, int, list[float], list[float]]] = {}
        for prefix, rows in sets:
            if rows not in done:  # with two vectors the joint set is the pair: computed once
                done[rows] = _set_stats(
                    [xs[i] for i in rows], [sqs[i] for i in rows], [nonzero[i] for i in rows]
                )
            multi, conflict, cl2, ties = done[rows]
            out[idx[(*prefix, "multi")]] += multi
            out[idx[(*prefix, "conflict")]] += conflict
            for j, i in enumerate(rows):
                out[idx[(*prefix, layout.names[i], "cl2_sq")]] += cl2[j]
                out[idx[(*prefix, layout.names[i], "ties_sq")]] += ties[j]
        for p, (a, b) in enumerate(layout.pairs):
            out[idx[("pair", p, "dot")]] += float(
                (xs[row[a]] * xs[row[b]]).sum(dtype=torch.float64)
            )


def _set_stats(
    xs: list[torch.Tensor], sqs: list[torch.Tensor], nonzero: list[int]
) -> tuple[int, int, list[float], list[float]]:
    """(multi-active coords, conflict coords, cl2^2 per row, ties-discarded^2 per row) of a set.

    ``xs`` are the set's S float32 [chunk] rows, ``sqs`` their squares, ``nonzero`` their
    non-zero counts.
    """
    hi, lo = xs[0], xs[0]
    for x in xs[1:]:
        hi, lo = torch.maximum(hi, x), torch.minimum(lo, x)
    # -1 where some row is > 0 and some row is < 0 (a conflict coordinate), else 0
    neg_conflict = torch.sign(hi).clamp_(min=0) * torch.sign(lo).clamp_(max=0)  # [chunk]
    if len(xs) == 2:  # |A_p| >= 2 is "both non-zero": inclusion-exclusion on counts
        multi = nonzero[0] + nonzero[1] - int(torch.count_nonzero(xs[0].abs() + xs[1].abs()))
        total = xs[0] + xs[1]  # the sign of a float32 sum of two values is exact
    else:
        active = sum((torch.sign(x).abs_() for x in xs), torch.zeros_like(xs[0]))  # [chunk] |A_p|
        multi = int(torch.count_nonzero(active.sub_(1).clamp_(min=0)))
        total = sum((x.double() for x in xs), torch.zeros_like(xs[0], dtype=torch.float64))
    # TIES sign election: +1 where the sum is >= +0 (a zero sum elects +), else -1
    elected = torch.copysign(torch.ones((), dtype=total.dtype), total).to(xs[0].dtype)
    cl2 = [-float((sq * neg_conflict).sum()) for sq in sqs]
    # entries against the elected sign: x * elected < 0; their squares are min(x * e, 0)^2
    ties = [float((x * elected).clamp_(max=0).square_().sum()) for x in xs]
    return multi, int(torch.count_nonzero(neg_conflict)), cl2, ties
