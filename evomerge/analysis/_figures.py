"""Figures from summed statistics: ratios, square roots and cosines, as nested dicts.

One function turns a sums vector (one tensor, one layer, one module type or the whole
model: sums add) into the nested figure dict written to ``summary.json``; ``flatten``
turns it into the dotted column names of ``conflicts.csv``. A ratio whose denominator is
zero is None (JSON null, an empty CSV cell).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from evomerge.analysis._stats import StatLayout

__all__ = ["figures", "flatten", "pair_key"]


def pair_key(a: str, b: str) -> str:
    """The name of the pair (a, b) in reports: ``"a|b"``."""
    return f"{a}|{b}"


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def _conflict(
    layout: StatLayout, s: np.ndarray, prefix: tuple[object, ...], numel: float
) -> dict[str, Any]:
    multi = layout.get(s, *prefix, "multi")
    conflict = layout.get(s, *prefix, "conflict")
    return {
        "conflict_coords": int(conflict),
        "multi_active_coords": int(multi),
        "conflict_fraction_active": _ratio(conflict, multi),
        "conflict_fraction_all": _ratio(conflict, numel),
    }


def _member(
    layout: StatLayout, s: np.ndarray, prefix: tuple[object, ...], v: str
) -> dict[str, Any]:
    l2 = math.sqrt(layout.get(s, "vec", v, "l2_sq"))
    cl2 = math.sqrt(layout.get(s, *prefix, v, "cl2_sq"))
    ties = math.sqrt(layout.get(s, *prefix, v, "ties_sq"))
    return {
        "cl2": cl2,
        "cl2_ratio": _ratio(cl2, l2),
        "ties_discarded_l2": ties,
        "ties_discarded_ratio": _ratio(ties, l2),
    }


def figures(layout: StatLayout, s: np.ndarray) -> dict[str, Any]:
    """Every figure of the summed statistics ``s`` (see the package docstring for definitions)."""
    numel = layout.get(s, "numel")
    out: dict[str, Any] = {"numel": int(numel)}
    if layout.joint:
        out.update(_conflict(layout, s, ("joint",), numel))
    per_model: dict[str, Any] = {}
    for v in layout.names:
        fig: dict[str, Any] = {
            "l2": math.sqrt(layout.get(s, "vec", v, "l2_sq")),
            "l2_untrimmed": math.sqrt(layout.get(s, "vec", v, "raw_l2_sq")),
            "unchanged_fraction": _ratio(layout.get(s, "vec", v, "unchanged"), numel),
            "nonzero_fraction": _ratio(layout.get(s, "vec", v, "nonzero"), numel),
        }
        if layout.joint:
            fig.update(_member(layout, s, ("joint",), v))
        per_model[v] = fig
    out["per_model"] = per_model
    per_pair: dict[str, Any] = {}
    for i, (a, b) in enumerate(layout.pairs):
        na = math.sqrt(layout.get(s, "vec", a, "l2_sq"))
        nb = math.sqrt(layout.get(s, "vec", b, "l2_sq"))
        cos = _ratio(layout.get(s, "pair", i, "dot"), na * nb)
        fig = {"cosine": cos, "abs_cosine": None if cos is None else abs(cos)}
        fig.update(_conflict(layout, s, ("pair", i), numel))
        fig["per_model"] = {v: _member(layout, s, ("pair", i), v) for v in (a, b)}
        per_pair[pair_key(a, b)] = fig
    out["per_pair"] = per_pair
    return out


def flatten(fig: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted.key, value)`` for every leaf of a nested figure dict, in insertion order."""
    for k, v in fig.items():
        if isinstance(v, Mapping):
            yield from flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v
