"""``evomerge status``: what a run directory's study holds, as a dict and as a table."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from evomerge.run import attrs as A
from evomerge.run._open import open_run
from evomerge.run._storage import is_finished

__all__ = ["compact_setting", "format_status", "study_status"]


def _entry(t: FrozenTrial) -> dict[str, Any]:
    return {
        "trial": t.number,
        "values": [float(v) for v in t.values] if t.values is not None else None,
        "scores": t.user_attrs.get(A.SCORES, {}),
        "recipe": t.user_attrs.get(A.RECIPE),
        "path": t.user_attrs.get(A.PATH),
    }


def study_status(run_dir: str | Path) -> dict[str, Any]:
    """A JSON-able summary of a run: counts, directions, best trial, Pareto front.

    Keys: ``name``, ``run_dir``, ``sampler``, ``n_target``, ``n_complete``, ``n_failed``
    (after retries), ``n_interrupted``, ``n_running``, ``n_waiting``, ``n_pruned``,
    ``objective_names``, ``directions``, ``best`` (``{trial, values, scores, recipe, path}`` or
    None: :meth:`StudyView.best`) and, with several objectives, ``pareto`` (a list of the
    same shape, best first); ``errors``: the last few failed trials' ``{trial, error}``.
    """
    run = open_run(run_dir)
    view = run.study
    counts = view.counts()
    failed = [t for t in view.trials(TrialState.FAIL) if is_finished(t)]
    best = view.best()
    info: dict[str, Any] = {
        "name": run.config.name,
        "run_dir": str(Path(run_dir)),
        "sampler": run.config.search.sampler,
        "n_target": int(view.attr(A.N_TARGET, run.config.search.n_trials)),
        "n_complete": counts.complete,
        "n_failed": counts.failed,
        "n_interrupted": counts.interrupted,
        "n_running": counts.running,
        "n_waiting": counts.waiting,
        "n_pruned": counts.pruned,
        "objective_names": view.objective_names,
        "directions": view.directions,
        "best": _entry(best) if best is not None else None,
        "errors": [
            {"trial": t.number, "error": t.user_attrs.get(A.ERROR, "")} for t in failed[-5:]
        ],
    }
    if len(view.directions) > 1:
        info["pareto"] = [_entry(t) for t in view.pareto()]
    return info


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _path_line(path: dict[str, Any]) -> str:
    """A data-flow path's steps, ``a[0] b[2]x0.8 ...`` (JSON data, no model loaded)."""
    steps = [
        f"{s}[{layer}]" + ("" if scale == 1.0 else f"x{scale:.3g}")
        for s, layer, scale in path.get("slots", [])
    ]
    return f"{len(steps)} layers, embeddings of {path.get('embedding')}: " + " ".join(steps)


def _recipe_table(recipe: dict[str, Any] | None) -> list[str]:
    if not recipe:
        return ["  (no recipe)"]
    lines = [f"  method: {recipe.get('merge_method')}   base: {recipe.get('base_model', '-')}"]
    for m in recipe.get("models", []):
        params = m.get("parameters", {})
        shown = ", ".join(f"{k}={compact_setting(v)}" for k, v in params.items()) or "-"
        lines.append(f"  {m['model']}: {shown}")
    if recipe.get("parameters"):
        lines.append(
            "  global: "
            + ", ".join(f"{k}={compact_setting(v)}" for k, v in recipe["parameters"].items())
        )
    return lines


def compact_setting(v: Any) -> str:
    """A compact view of a setting: scalars as is, per-layer lists as their distinct runs."""
    if isinstance(v, list) and v and all(isinstance(e, int | float) for e in v):
        runs: list[float] = []
        for e in v:
            if not runs or runs[-1] != e:
                runs.append(e)
        return "[" + " ".join(f"{e:.3g}" for e in runs) + "]"
    if isinstance(v, list) and v and all(isinstance(e, dict) for e in v):
        return (
            "{"
            + "; ".join(f"{e.get('filter') or '*'}: {compact_setting(e.get('value'))}" for e in v)
            + "}"
        )
    return _fmt(v)


def format_status(info: dict[str, Any]) -> str:
    """A readable table of :func:`study_status`'s dict."""
    names = info["objective_names"]
    lines = [
        f"run {info['name']} ({info['run_dir']}), sampler {info['sampler']}",
        f"  trials: {info['n_complete']} complete, {info['n_failed']} failed, {info['n_running']} running, "
        f"{info['n_waiting']} waiting, {info['n_pruned']} pruned, {info['n_interrupted']} interrupted; "
        f"target {info['n_target']}",
        "  objectives: "
        + ", ".join(f"{n} ({d})" for n, d in zip(names, info["directions"], strict=False)),
    ]
    best = info.get("best")
    if best is None:
        lines.append("  no complete trial yet")
    else:
        values = ", ".join(f"{n}={_fmt(v)}" for n, v in zip(names, best["values"], strict=False))
        lines.append(f"best: trial {best['trial']}: {values}")
        if best.get("scores"):
            lines.append(
                "  judges: " + ", ".join(f"{k}={_fmt(v)}" for k, v in best["scores"].items())
            )
        if best.get("path"):
            lines.append("  path: " + _path_line(best["path"]))
        else:
            lines.extend(_recipe_table(best.get("recipe")))
    if "pareto" in info:
        lines.append(f"pareto front ({len(info['pareto'])} trial(s)):")
        lines.append("  trial  " + "  ".join(f"{n:>12}" for n in names))
        for e in info["pareto"]:
            lines.append(f"  {e['trial']:>5}  " + "  ".join(f"{_fmt(v):>12}" for v in e["values"]))
    if info.get("errors"):
        lines.append("recent failures:")
        lines.extend(f"  trial {e['trial']}: {e['error'][:160]}" for e in info["errors"])
    return "\n".join(lines)
