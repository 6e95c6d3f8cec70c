"""Layers x module-type heatmaps of one figure each, as PNG (matplotlib's Agg canvas, no pyplot)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from evomerge.analysis._report import ConflictReport

__all__ = ["heatmap_specs", "write_heatmap"]

Getter = Callable[[dict[str, Any]], float | None]


def _slug(path: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", path.replace("|", "__vs__"))


def _getter(*keys: str) -> Getter:
    def get(fig: dict[str, Any]) -> float | None:
        cur: Any = fig
        for k in keys:
            cur = cur[k]
        return cur

    return get


def heatmap_specs(report: ConflictReport) -> list[tuple[str, str, Getter]]:
    """``(file stem, title, getter)`` for every heatmap drawn for ``report``.

    models: the joint conflict fractions, each model's ``cl2_ratio`` and each pair's cosine;
    candidates: each candidate|source pair's ``conflict_fraction_active`` and cosine.
    """
    specs: list[tuple[str, str, Getter]] = []
    if report.layout.joint:
        specs.append(
            (
                "conflict_fraction_active",
                "Sign-conflict fraction (of coords with >= 2 active models)",
                _getter("conflict_fraction_active"),
            )
        )
        specs.append(
            (
                "conflict_fraction_all",
                "Sign-conflict fraction (of all coords)",
                _getter("conflict_fraction_all"),
            )
        )
        for v in report.names:
            specs.append(
                (f"cl2_ratio.{v}", f"CL2 / L2 of {v}", _getter("per_model", v, "cl2_ratio"))
            )
    for a, b in report.layout.pairs:
        key = f"{a}|{b}"
        if not report.layout.joint:
            specs.append(
                (
                    f"conflict_fraction_active.{key}",
                    f"Sign-conflict fraction (active), {a} vs {b}",
                    _getter("per_pair", key, "conflict_fraction_active"),
                )
            )
        specs.append(
            (
                f"cosine.{key}",
                f"Cosine of task vectors, {a} vs {b}",
                _getter("per_pair", key, "cosine"),
            )
        )
    return [(f"heatmap_{_slug(stem)}", title, get) for stem, title, get in specs]


def write_heatmap(
    cells: dict[int, dict[str, dict[str, Any]]],
    modules: list[str],
    get: Getter,
    title: str,
    path: Path,
) -> None:
    """Draw ``get(cell)`` for layers (rows) x ``modules`` (columns); missing cells stay blank."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    layers = sorted(cells)
    data = np.full((len(layers), len(modules)), np.nan)  # [layers, modules]
    for r, layer in enumerate(layers):
        for c, m in enumerate(modules):
            fig = cells[layer].get(m)
            val = get(fig) if fig is not None else None
            if val is not None and math.isfinite(val):
                data[r, c] = val
    height = max(2.5, 0.28 * len(layers) + 1.5)
    figure = Figure(figsize=(max(4.0, 0.7 * len(modules) + 2.5), height))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    image = ax.imshow(
        np.ma.masked_invalid(data), aspect="auto", cmap="viridis", interpolation="nearest"
    )
    figure.colorbar(image, ax=ax)
    ax.set_xticks(range(len(modules)), modules)
    step = max(1, len(layers) // 32)
    ax.set_yticks(
        range(0, len(layers), step), [str(layers[i]) for i in range(0, len(layers), step)]
    )
    ax.set_xlabel("module type")
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(str(path), dpi=100)
