"""The report's figures, each a function ``ReportData -> Figure | None`` (None: nothing to draw)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from evomerge.report._data import ReportData
from evomerge.report._path_plot import path_figure
from evomerge.space import parse_genome_name

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["FIGURES", "history", "importance", "pareto", "recipe_heatmap", "timings"]


def _figure(width: float = 7.0, height: float = 4.0) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def history(data: ReportData) -> Figure | None:
    """Objective per trial (dots) and best so far (line), one panel per objective."""
    done = data.complete
    if not done:
        return None
    n_obj = len(data.objective_names)
    fig = _figure(7.0, 3.0 * n_obj)
    axes = fig.subplots(n_obj, 1, squeeze=False)[:, 0]
    for i, ax in enumerate(axes):
        xs = [t.number for t in done]
        ys = [t.values[i] for t in done if t.values is not None]
        maximize = data.directions[i] == "maximize"
        best = np.maximum.accumulate(ys) if maximize else np.minimum.accumulate(ys)
        ax.scatter(xs, ys, s=14, alpha=0.6, label="trial")
        ax.step(xs, best, where="post", color="C3", label="best so far")
        for j, (name, base) in enumerate(sorted(data.baselines.items())):
            vals = base.get("values") or []
            if len(vals) > i:
                ax.axhline(vals[i], ls="--", lw=1, color=f"C{4 + j}", label=f"source {name}")
        ax.set_xlabel("trial")
        ax.set_ylabel(f"{data.objective_names[i]} ({data.directions[i]})")
        ax.legend(fontsize=8, loc="best")
    fig.suptitle("Optimization history")
    return fig


def recipe_heatmap(data: ReportData) -> Figure | None:
    """The best trial's genome: layer group x (filter, source), one panel per parameter."""
    best = data.best
    if best is None:
        return None
    cells: dict[str, dict[tuple[int, str], float]] = {}
    for name, value in best.params.items():
        part = parse_genome_name(name)
        if part is None:
            continue
        column = part.who if part.filter == "all" else f"{part.filter}:{part.who}"
        cells.setdefault(part.param, {})[(part.group, column)] = value
    if not cells:
        return None
    fig = _figure(3.2 * len(cells) + 1, 4.0)
    axes = fig.subplots(1, len(cells), squeeze=False)[0]
    for ax, (param, values) in zip(axes, sorted(cells.items()), strict=True):
        groups = sorted({g for g, _ in values})
        columns = sorted({c for _, c in values})
        grid = np.full((len(groups), len(columns)), np.nan)  # [groups, columns]
        for (g, c), v in values.items():
            grid[groups.index(g), columns.index(c)] = v
        im = ax.imshow(grid, aspect="auto", cmap="viridis")
        ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(groups)), [f"group {g}" for g in groups], fontsize=8)
        ax.set_title(param)
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.suptitle(f"Best recipe (trial {best.number})")
    return fig


def pareto(data: ReportData) -> Figure | None:
    """All complete trials on the first two objectives, the Pareto front highlighted, and the
    baselines (``baselines.json``: sources, hand-picked merges) marked and named."""
    if len(data.objective_names) < 2 or not data.complete:
        return None
    fig = _figure(5.5, 4.5)
    ax = fig.subplots()
    pts = np.array([t.values[:2] for t in data.complete if t.values is not None])  # [trials, 2]
    ax.scatter(pts[:, 0], pts[:, 1], s=14, alpha=0.4, label="trials")
    front = sorted((t.values[:2] for t in data.front if t.values is not None), key=lambda v: v[0])
    if front:
        f = np.array(front)  # [front, 2]
        ax.plot(f[:, 0], f[:, 1], "o-", color="C3", label="Pareto front")
    for j, (name, base) in enumerate(sorted(data.baselines.items())):
        vals = base.get("values") or []
        if len(vals) >= 2:
            ax.scatter([vals[0]], [vals[1]], marker="X", s=60, color=f"C{4 + j % 6}", label=name)
            ax.annotate(
                name, (vals[0], vals[1]), fontsize=7, xytext=(4, 4), textcoords="offset points"
            )
    ax.set_xlabel(f"{data.objective_names[0]} ({data.directions[0]})")
    ax.set_ylabel(f"{data.objective_names[1]} ({data.directions[1]})")
    ax.legend(fontsize=8)
    ax.set_title("Pareto front")
    return fig


def importance(data: ReportData, top: int = 20) -> Figure | None:
    """Parameter importance of the first objective (PED-ANOVA), the ``top`` largest."""
    if not data.importances:
        return None
    items = sorted(data.importances.items(), key=lambda kv: kv[1], reverse=True)[:top][::-1]
    fig = _figure(7.0, 0.25 * len(items) + 1.2)
    ax = fig.subplots()
    ax.barh([k for k, _ in items], [v for _, v in items], color="C0")
    ax.set_xlabel("importance")
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title("Parameter importance")
    return fig


def timings(data: ReportData) -> Figure | None:
    """Seconds per stage (merge, generate, judge, ...) for each complete trial, stacked."""
    done = [t for t in data.complete if t.timings]
    if not done:
        return None
    stages = sorted({k for t in done for k in t.timings})
    fig = _figure(7.0, 3.5)
    ax = fig.subplots()
    xs = np.array([t.number for t in done])
    bottom = np.zeros(len(done))
    for i, stage in enumerate(stages):
        ys = np.array([t.timings.get(stage, 0.0) for t in done])
        ax.bar(xs, ys, bottom=bottom, label=stage, color=f"C{i}")
        bottom += ys
    ax.set_xlabel("trial")
    ax.set_ylabel("seconds")
    ax.legend(fontsize=8)
    ax.set_title("Time per trial by stage")
    return fig


#: File stem -> figure builder, in report order.
FIGURES = {
    "history": history,
    "best_recipe": recipe_heatmap,
    "best_path": path_figure,
    "pareto": pareto,
    "importance": importance,
    "timings": timings,
}
