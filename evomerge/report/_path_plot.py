"""The report's picture of a data-flow trial: its path, slots x the sources' layers."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import numpy as np

from evomerge.report._data import ReportData
from evomerge.space import parse_path_gene_name

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["path_figure", "path_rows", "path_table_html"]


def path_rows(path: dict[str, Any], params: dict[str, float]) -> list[tuple[str, int]]:
    """The grid's rows: every layer of every source the genome or the path names, grouped
    by source in the path's order, layers ascending."""
    seen = {(s, int(layer)) for s, layer, _ in path.get("slots", [])}
    for name in params:
        part = parse_path_gene_name(name)
        if part is not None and part.kind == "slot":
            seen.add(part.layer)
    order = {n: i for i, n in enumerate(path.get("sources", {}))}
    return sorted(seen, key=lambda r: (order.get(r[0], len(order)), r[0], r[1]))


def path_figure(data: ReportData) -> Figure | None:
    """The best trial's path: one column per slot, one row per source layer; a boxed cell
    is the layer at that slot, coloured and labelled with its transition scale."""
    from matplotlib.figure import Figure

    best = data.best
    if best is None or best.path is None:
        return None
    slots = best.path.get("slots", [])
    rows = path_rows(best.path, best.params)
    index = {r: i for i, r in enumerate(rows)}
    grid = np.full((len(rows), len(slots)), np.nan)  # [source layers, slots]
    for k, (s, layer, scale) in enumerate(slots):
        grid[index[(s, int(layer))], k] = float(scale)
    width = min(16.0, 2.5 + 0.45 * len(slots))
    fig = Figure(figsize=(width, 1.5 + 0.3 * len(rows)), dpi=100, layout="constrained")
    ax = fig.subplots()
    from matplotlib.patches import Rectangle

    im = ax.imshow(grid, aspect="auto", cmap="coolwarm", vmin=0.0, vmax=2.0)
    for k, (s, layer, scale) in enumerate(slots):
        row = index[(s, int(layer))]
        ax.add_patch(Rectangle((k - 0.45, row - 0.45), 0.9, 0.9, fill=False, lw=1.5, ec="black"))
        ax.text(k, row, f"{float(scale):.2g}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(slots)), [str(k) for k in range(len(slots))], fontsize=8)
    ax.set_yticks(range(len(rows)), [f"{s}[{layer}]" for s, layer in rows], fontsize=8)
    ax.set_xlabel("slot (position on the path)")
    ax.set_ylabel("source layer")
    fig.colorbar(im, ax=ax, shrink=0.8, label="scale on entry (1 = none)")
    fig.suptitle(
        f"Best path (trial {best.number}): {len(slots)} layers, embeddings of "
        f"{best.path.get('embedding')}"
    )
    return fig


def path_table_html(path: dict[str, Any]) -> str:
    """An HTML table of the path: slot, source, source layer, scale."""
    cells = "".join(
        f"<tr><td>{k}</td><td>{html.escape(str(s))}</td><td>{layer}</td><td>{float(scale):.4g}</td></tr>"
        for k, (s, layer, scale) in enumerate(path.get("slots", []))
    )
    return (
        f"<table><tr><th>slot</th><th>source</th><th>layer</th><th>scale</th></tr>{cells}</table>"
    )
