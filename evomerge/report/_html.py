"""The run report: one self-contained HTML file (figures embedded) plus the PNGs beside it."""

from __future__ import annotations

import base64
import html
import logging
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

import yaml

from evomerge.atomic import atomic_write
from evomerge.report._data import ReportData, TrialRow, load_report_data
from evomerge.report._path_plot import path_table_html
from evomerge.report._plots import FIGURES
from evomerge.run import REPORT_DIR

logger = logging.getLogger(__name__)

__all__ = ["render_html", "write_report"]

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:4px 8px;
vertical-align:top;text-align:left;font-size:13px}th{background:#f3f3f3}img{max-width:100%}
pre{background:#f7f7f7;padding:8px;overflow-x:auto;font-size:12px}.muted{color:#777}
"""

#: How many prompts' answers the sample table shows.
SAMPLE_ROWS = 6


def _esc(x: object) -> str:
    return html.escape(str(x))


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.4g}"


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _table(header: list[str], rows: Iterable[list[str]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _summary(data: ReportData) -> str:
    counts = (
        ", ".join(f"{k.lower()}: {v}" for k, v in sorted(data.counts.items())) or "no trials yet"
    )
    rows = []
    for t in data.front:
        vals = ", ".join(
            f"{n}={_fmt(v)}" for n, v in zip(data.objective_names, t.values or [], strict=False)
        )
        scores = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(t.scores.items()))
        rows.append([str(t.number), _esc(vals), _esc(scores)])
    for name, base in sorted(data.baselines.items()):
        vals = ", ".join(
            f"{n}={_fmt(v)}"
            for n, v in zip(data.objective_names, base.get("values") or [], strict=False)
        )
        scores = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted((base.get("scores") or {}).items()))
        rows.append([f"source <b>{_esc(name)}</b>", _esc(vals), _esc(scores)])
    title = "Best trial" if len(data.objective_names) == 1 else "Pareto front"
    return (
        f"<p>Sampler <b>{_esc(data.sampler)}</b>; objectives: "
        + ", ".join(
            f"{_esc(n)} ({_esc(d)})"
            for n, d in zip(data.objective_names, data.directions, strict=False)
        )
        + f"; trials: {_esc(counts)}.</p>"
        + f"<h2>{title}</h2>"
        + (
            _table(["trial", "objective", "per-judge scores"], rows)
            if rows
            else "<p class=muted>No complete trial yet.</p>"
        )
    )


def _samples(data: ReportData) -> str:
    best = data.best
    if best is None or not best.samples:
        return ""
    sources = sorted(data.baselines)
    answers = {
        name: {
            s.get("question", ""): s.get("answer", "")
            for s in data.baselines[name].get("samples") or []
        }
        for name in sources
    }
    rows = []
    for s in best.samples[:SAMPLE_ROWS]:
        q = s.get("question", "")
        rows.append(
            [_esc(q), _esc(s.get("answer", ""))] + [_esc(answers[n].get(q, "—")) for n in sources]
        )
    header = ["prompt", f"best (trial {best.number})"] + [f"source {n}" for n in sources]
    return "<h2>Sample answers</h2>" + _table(header, rows)


def _errors(trials: list[TrialRow], limit: int = 10) -> str:
    failed = [t for t in trials if t.state == "FAIL" and t.error][-limit:]
    if not failed:
        return ""
    return "<h2>Failed trials</h2>" + _table(
        ["trial", "error"], ([str(t.number), _esc(t.error)] for t in failed)
    )


def render_html(data: ReportData, figures: dict[str, bytes]) -> str:
    """The report page for ``data`` with the given PNG figures (stem -> bytes) embedded."""
    parts = [f"<h1>evomerge run: {_esc(data.name)}</h1>", _summary(data)]
    for stem, png in figures.items():
        parts.append(f'<div class="fig" id="{_esc(stem)}">{_img(png, stem)}</div>')
    if data.best is not None and data.best.path is not None:
        parts.append(
            f"<h2>Best path (trial {data.best.number})</h2>" + path_table_html(data.best.path)
        )
    elif data.best is not None:
        recipe = data.best
        parts.append(
            f"<h2>Best genome (trial {recipe.number})</h2><pre>{_esc(yaml.safe_dump(recipe.params, sort_keys=True))}</pre>"
        )
    parts.append(_samples(data))
    if data.conflict_images:
        parts.append("<h2>Task-vector conflicts of the top candidates</h2>")
        parts.append('<p class=muted>From <a href="../analysis/summary.json">analysis/</a>.</p>')
        parts.extend(_img(p.read_bytes(), p.stem) for p in data.conflict_images)
    parts.append(_errors(data.trials))
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts.append(f"<p class=muted>Written {stamp} from {_esc(data.run_dir)}.</p>")
    body = "\n".join(p for p in parts if p)
    return f"<!doctype html><html><head><meta charset=utf-8><title>evomerge: {_esc(data.name)}</title><style>{_CSS}</style></head><body>{body}</body></html>"


def write_report(run_dir: str | Path) -> Path:
    """Write ``RUN_DIR/report/report.html`` and its PNGs; works while the run is going.

    Raises SearchError when the run directory holds no study yet.
    """
    import matplotlib

    matplotlib.use("Agg")
    data = load_report_data(run_dir)
    out = Path(run_dir) / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    figures: dict[str, bytes] = {}
    for stem, build in FIGURES.items():
        fig = build(data)
        if fig is None:
            continue
        png = out / f"{stem}.png"
        fig.savefig(png)
        figures[stem] = png.read_bytes()
    path = out / "report.html"
    atomic_write(path, render_html(data, figures))
    logger.info("wrote %s (%d figures)", path, len(figures))
    return path
