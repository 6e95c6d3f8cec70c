"""Writing a ConflictReport (conflicts.csv, summary.json, heatmaps) and the ``conflicts`` command."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evomerge.analysis._conflicts import analyze_pool, check_args
from evomerge.analysis._figures import flatten
from evomerge.analysis._heatmap import heatmap_specs, write_heatmap
from evomerge.analysis._report import MODULE_ORDER, ConflictReport
from evomerge.atomic import DISK_ERRNOS, atomic_directory, write_error
from evomerge.exceptions import ExportError

__all__ = ["format_top_layers", "run_conflicts", "write_conflict_outputs"]

logger = logging.getLogger(__name__)

_OUTPUTS = ("conflicts.csv", "summary.json")


def _cell(v: Any) -> Any:
    return "" if v is None else v


def _write_csv(report: ConflictReport, path: Path) -> None:
    header: list[str] | None = None
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        for i, row in enumerate(report.tensors):
            flat = [(k, v) for k, v in flatten(report.tensor_figures(i)) if k != "numel"]
            if header is None:
                header = ["name", "layer", "module", "numel", *(k for k, _ in flat)]
                writer.writerow(header)
            layer = "" if row.layer is None else row.layer
            writer.writerow([row.name, layer, row.module, row.numel, *(_cell(v) for _, v in flat)])


def write_conflict_outputs(
    report: ConflictReport, out_dir: str | Path, *, heatmaps: bool = True
) -> dict[str, Any]:
    """Write ``conflicts.csv``, ``summary.json`` and the PNG heatmaps as ``out_dir``.

    Atomic, like a checkpoint: the files are written into a hidden sibling folder that
    replaces ``out_dir`` once complete, so an interrupted or failed write (Ctrl-C, SIGTERM,
    a full disk) leaves the previous analysis, or nothing, never a partial CSV or PNG.
    ``out_dir`` may be absent, empty or hold a previous analysis; other files there are
    refused (ExportError naming them), never deleted.

    Returns the written paths: ``{"csv": Path, "summary": Path, "heatmaps": {stem: Path}}``;
    ``summary.json`` also lists the heatmap file names under ``"heatmaps"``. Raises
    ExportError when the directory cannot be written (WriteError, one line, for a full
    disk, a read-only file system or no permission).
    """
    out = Path(out_dir).expanduser().absolute()
    _refuse_foreign_files(out)
    with atomic_directory(out, overwrite=True) as tmp:
        written = _write_all(report, tmp, heatmaps=heatmaps, shown=out)
    logger.info("wrote conflict analysis to %s", out)
    return {
        "csv": out / "conflicts.csv",
        "summary": out / "summary.json",
        "heatmaps": {stem: out / p.name for stem, p in written.items()},
    }


def _refuse_foreign_files(out: Path) -> None:
    if not out.is_dir():
        return
    foreign = sorted(p.name for p in out.iterdir() if p.name not in _OUTPUTS and p.suffix != ".png")
    if foreign:
        raise ExportError(
            f"--out: {out} holds files that are not a conflict analysis ({', '.join(foreign[:5])}); "
            "the analysis replaces the whole folder, so choose an empty or new one"
        )


def _write_all(
    report: ConflictReport, out: Path, *, heatmaps: bool, shown: Path
) -> dict[str, Path]:
    """Write the files into ``out``; errors name ``shown`` (the folder the user asked for)."""
    try:
        csv_path = out / "conflicts.csv"
        _write_csv(report, csv_path)
        written: dict[str, Path] = {}
        summary = report.summary()
        cells = summary["per_layer_module"]
        if heatmaps and cells:
            by_layer = {int(k): v for k, v in cells.items()}
            present = {m for row in by_layer.values() for m in row}
            modules = [m for m in MODULE_ORDER if m in present] + sorted(
                present - set(MODULE_ORDER)
            )
            for stem, title, get in heatmap_specs(report):
                path = out / f"{stem}.png"
                write_heatmap(by_layer, modules, get, title, path)
                written[stem] = path
        summary["heatmaps"] = {stem: p.name for stem, p in written.items()}
        summary_path = out / "summary.json"
        summary_path.write_text(
            json.dumps(summary, indent=2, allow_nan=False) + "\n", encoding="utf-8"
        )
    except OSError as err:
        if err.errno in DISK_ERRNOS:
            raise write_error(err, shown, what="the conflict analysis") from err
        raise ExportError(f"cannot write the conflict analysis to {shown}: {err}") from err
    return written


def _fmt(v: float | None) -> str:
    return "     -" if v is None else f"{v:6.3f}"


def format_top_layers(report: ConflictReport, n: int = 5) -> str:
    """A short plain-text table of the ``n`` most conflicted layers."""
    top = report.most_conflicted_layers(n)
    if not top:
        return "No layer has coordinates changed by two or more models: nothing conflicts."
    if report.layout.joint:
        cols = ["conflict(active)", "conflict(all)", *(f"cl2/l2 {v}" for v in report.names)]

        def values(fig: dict[str, Any]) -> list[float | None]:
            return [
                fig["conflict_fraction_active"],
                fig["conflict_fraction_all"],
                *(fig["per_model"][v]["cl2_ratio"] for v in report.names),
            ]
    else:
        cols = [f"conflict {k}" for k in (f"{a}|{b}" for a, b in report.layout.pairs)]

        def values(fig: dict[str, Any]) -> list[float | None]:
            return [p["conflict_fraction_active"] for p in fig["per_pair"].values()]

    widths = [max(6, len(c)) for c in cols]
    lines = [
        f"Most conflicted layers (of {len(report.per_layer())}):",
        "layer  " + "  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True)),
    ]
    for layer, fig in top:
        cells = [_fmt(v).rjust(w) for v, w in zip(values(fig), widths, strict=True)]
        lines.append(f"{layer:>5}  " + "  ".join(cells))
    whole = report.whole_model()
    if report.layout.joint:
        lines.append(
            f"whole model: conflict(active) {_fmt(whole['conflict_fraction_active']).strip()}, "
            f"conflict(all) {_fmt(whole['conflict_fraction_all']).strip()}"
        )
    return "\n".join(lines)


def run_conflicts(
    base: str | Path,
    models: Sequence[str | Path],
    out: str | Path,
    *,
    density: float | None = None,
    trim_scope: str = "tensor",
    allow_pickle: bool = False,
    progress: bool = False,
) -> str:
    """What ``evomerge conflicts`` runs: open the pool, analyse, write ``out``; returns the table to print."""
    from evomerge.pool import ModelPool

    check_args(density, trim_scope)  # before opening any checkpoint
    _refuse_foreign_files(Path(out).expanduser().absolute())
    pool = ModelPool.open(base, list(models), allow_pickle=allow_pickle)
    report = analyze_pool(pool, density=density, trim_scope=trim_scope, progress=progress)
    paths = write_conflict_outputs(report, out)
    return f"{format_top_layers(report)}\nwrote {paths['csv'].parent}/ (conflicts.csv, summary.json, {len(paths['heatmaps'])} heatmaps)"
