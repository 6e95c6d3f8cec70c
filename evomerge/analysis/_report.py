"""ConflictReport: the per-tensor statistics of one analysis and their aggregations."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from evomerge.analysis._figures import figures
from evomerge.analysis._stats import StatLayout
from evomerge.pool import MODULE_TYPES

__all__ = ["MODULE_ORDER", "ConflictReport", "TensorRow"]

#: Module types in display order (those ``evomerge.pool`` classifies tensors into).
MODULE_ORDER: tuple[str, ...] = MODULE_TYPES


@dataclass(frozen=True)
class TensorRow:
    """Where one analysed tensor sits: its name, layer (None outside the stack) and module type."""

    name: str
    layer: int | None
    module: str
    numel: int


def _module_rank(m: str) -> int:
    return MODULE_ORDER.index(m) if m in MODULE_ORDER else len(MODULE_ORDER)


@dataclass(frozen=True)
class ConflictReport:
    """The result of :func:`analyze_conflicts`; immutable, cheap (one float64 row per tensor).

    ``kind`` is ``"models"`` (the joint set of all vectors and every pair) or
    ``"candidates"`` (candidate x source pairs only). ``thresholds`` holds, per vector,
    the global trim threshold on ``|tau|`` (global scope only; None when not trimmed).
    """

    kind: str
    layout: StatLayout
    tensors: list[TensorRow]
    sums: np.ndarray  # [n_tensors, len(layout)] float64
    density: float | None
    trim_scope: str
    thresholds: dict[str, float | None] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """The analysed task vectors' names (sources, then candidates)."""
        return list(self.layout.names)

    def _group(self, key: Callable[[TensorRow], Any]) -> dict[Any, np.ndarray]:
        out: dict[Any, np.ndarray] = {}
        for row, s in zip(self.tensors, self.sums, strict=True):
            k = key(row)
            if k is None:
                continue
            out[k] = out[k] + s if k in out else s.copy()
        return out

    def tensor_figures(self, i: int) -> dict[str, Any]:
        """Figures of tensor ``self.tensors[i]``."""
        return figures(self.layout, self.sums[i])

    def whole_model(self) -> dict[str, Any]:
        return figures(
            self.layout, self.sums.sum(axis=0) if len(self.tensors) else self.layout.zeros()
        )

    def per_layer(self) -> dict[int, dict[str, Any]]:
        """Figures per layer index, over every tensor of the layer (tensors outside the stack excluded)."""
        groups = self._group(lambda r: r.layer)
        return {k: figures(self.layout, groups[k]) for k in sorted(groups)}

    def per_module(self) -> dict[str, dict[str, Any]]:
        """Figures per module type, over all layers (and tensors outside the stack)."""
        groups = self._group(lambda r: r.module)
        return {k: figures(self.layout, groups[k]) for k in sorted(groups, key=_module_rank)}

    def per_layer_module(self) -> dict[int, dict[str, dict[str, Any]]]:
        """Figures per (layer, module type) cell: the heatmaps' data."""
        groups = self._group(lambda r: None if r.layer is None else (r.layer, r.module))
        out: dict[int, dict[str, dict[str, Any]]] = {}
        for layer, module in sorted(groups, key=lambda lm: (lm[0], _module_rank(lm[1]))):
            out.setdefault(layer, {})[module] = figures(self.layout, groups[(layer, module)])
        return out

    def summary(self) -> dict[str, Any]:
        """The JSON document written as ``summary.json`` (layer keys are strings)."""
        return {
            "kind": self.kind,
            "models": self.names,
            "pairs": [f"{a}|{b}" for a, b in self.layout.pairs],
            "trim": {
                "density": self.density,
                "scope": self.trim_scope if self.density is not None else None,
                "global_thresholds": self.thresholds or None,
            },
            "num_tensors": len(self.tensors),
            "whole_model": self.whole_model(),
            "per_layer": {str(k): v for k, v in self.per_layer().items()},
            "per_module": self.per_module(),
            "per_layer_module": {str(k): v for k, v in self.per_layer_module().items()},
        }

    def layer_score(self, fig: dict[str, Any]) -> float | None:
        """How conflicted a group is: the joint active-conflict fraction, else the largest pair's."""
        if self.layout.joint:
            return fig.get("conflict_fraction_active")
        vals = [
            p["conflict_fraction_active"]
            for p in fig["per_pair"].values()
            if p["conflict_fraction_active"] is not None
        ]
        return max(vals) if vals else None

    def most_conflicted_layers(self, n: int = 5) -> list[tuple[int, dict[str, Any]]]:
        """Up to ``n`` layers, most conflicted first (by :meth:`layer_score`)."""
        scored = [(layer, fig, self.layer_score(fig)) for layer, fig in self.per_layer().items()]
        scored = [t for t in scored if t[2] is not None]
        scored.sort(key=lambda t: (-float(t[2] or 0.0), t[0]))
        return [(layer, fig) for layer, fig, _ in scored[:n]]
