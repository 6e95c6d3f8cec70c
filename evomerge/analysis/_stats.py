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

_CHUNK = 1 << 21  # coordinates per chunk: bounds the [T, chunk] float64/bool temporaries


class StatLayout:
    """Index of every statistic for vectors ``names``, a joint set and the given pairs.

    Keys: ``("numel",)``; per vector ``("vec", v, s)`` for s in l2_sq, raw_l2_sq,
    unchanged, nonzero; for the joint set (all vectors) ``("joint", s)`` for s in multi,
    conflict and ``("joint", v, s)`` for s in cl2_sq, ties_sq; per pair ``("pair", i, s)``
    for s in dot, multi, conflict and ``("pair", i, v, s)`` for s in cl2_sq, ties_sq.
    """

    def __init__(self, names: Sequence[str], *, joint: bool, pairs: Sequence[tuple[str, str]]) -> None:
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


def raw_stats(layout: StatLayout, out: np.ndarray, name: str, tau: torch.Tensor) -> None:
    """Record the untrimmed figures of vector ``name`` (``||tau||^2`` and exact zeros)."""
    flat = tau.reshape(-1)
    sq = 0.0
    for start in range(0, flat.numel(), _CHUNK):
        c = flat[start : start + _CHUNK].double()
        sq += float(torch.dot(c, c))
    out[layout.index[("vec", name, "raw_l2_sq")]] += sq
    out[layout.index[("vec", name, "unchanged")]] += float((flat == 0).sum())


def tensor_stats(layout: StatLayout, out: np.ndarray, taus: Sequence[torch.Tensor]) -> None:
    """Add the statistics of one tensor's (trimmed) task vectors, in ``layout.names`` order."""
    idx = layout.index
    pos_of = {v: i for i, v in enumerate(layout.names)}
    flats = [t.reshape(-1) for t in taus]
    n = flats[0].numel()
    out[idx[("numel",)]] += n
    for start in range(0, n, _CHUNK):
        x = torch.stack([f[start : start + _CHUNK] for f in flats]).double()  # [T, chunk]
        pos, neg = x > 0, x < 0
        sq = x * x
        for v, i in pos_of.items():
            out[idx[("vec", v, "l2_sq")]] += float(sq[i].sum())
            out[idx[("vec", v, "nonzero")]] += float((pos[i] | neg[i]).sum())
        if layout.joint:
            _set_stats(out, idx, ("joint",), layout.names, x, pos, neg, sq)
        for p, (a, b) in enumerate(layout.pairs):
            rows = [pos_of[a], pos_of[b]]
            out[idx[("pair", p, "dot")]] += float(torch.dot(x[rows[0]], x[rows[1]]))
            _set_stats(out, idx, ("pair", p), [a, b], x[rows], pos[rows], neg[rows], sq[rows])


def _set_stats(
    out: np.ndarray,
    idx: dict[tuple[object, ...], int],
    prefix: tuple[object, ...],
    names: Sequence[str],
    x: torch.Tensor,  # [S, chunk] float64, the set's vectors
    pos: torch.Tensor,
    neg: torch.Tensor,
    sq: torch.Tensor,
) -> None:
    active = (pos | neg).sum(0)  # [chunk] |A_p|
    conflict = pos.any(0) & neg.any(0)  # [chunk] a positive and a negative value at p
    out[idx[(*prefix, "multi")]] += float((active >= 2).sum())
    out[idx[(*prefix, "conflict")]] += float(conflict.sum())
    elected = torch.where(x.sum(0) >= 0, 1.0, -1.0)  # TIES sign election; a zero sum elects +
    opposed = (x * elected) < 0  # [S, chunk]
    cl2 = (sq * conflict).sum(1)
    ties = (sq * opposed).sum(1)
    for i, v in enumerate(names):
        out[idx[(*prefix, v, "cl2_sq")]] += float(cl2[i])
        out[idx[(*prefix, v, "ties_sq")]] += float(ties[i])
