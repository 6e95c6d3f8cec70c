"""``evomerge status``: what a run directory's study holds, as a dict and as a table."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from evomerge.exceptions import SearchError
from evomerge.search._rundir import load_run_dir_config
from evomerge.search._study import is_finished, make_storage, storage_path

__all__ = ["compact_setting", "format_status", "load_run_study", "study_status"]


def load_run_study(run_dir: str | Path) -> tuple[Any, optuna.Study]:
    """``(RunConfig, study)`` of a run directory, read-only use (the driver may be running)."""
    run_dir = Path(run_dir)
    config = load_run_dir_config(run_dir)
    path = storage_path(run_dir, config.search.storage)
    if not path.exists():
        raise SearchError(
            f"{run_dir} has no study yet ({path.name} is missing); start the search first"
        )
    storage = make_storage(run_dir, config.search.storage)
    try:
        study = optuna.load_study(study_name=config.name, storage=storage)
    except KeyError:
        raise SearchError(f"{path} holds no study named {config.name!r}") from None
    return config, study


def _entry(t: FrozenTrial) -> dict[str, Any]:
    return {
        "trial": t.number,
        "values": [float(v) for v in t.values] if t.values is not None else None,
        "scores": t.user_attrs.get("scores", {}),
        "recipe": t.user_attrs.get("recipe"),
    }


def study_status(run_dir: str | Path) -> dict[str, Any]:
    """A JSON-able summary of a run: counts, directions, best trial, Pareto front.

    Keys: ``name``, ``run_dir``, ``sampler``, ``n_target``, ``n_complete``, ``n_failed``
    (after retries), ``n_interrupted``, ``n_running``, ``n_waiting``, ``objective_names``,
    ``directions``, ``best`` (``{trial, values, scores, recipe}`` or None) and, with several
    objectives, ``pareto`` (a list of the same shape, ordered by the first objective);
    ``errors``: the last few failed trials' ``{trial, error}``.
    """
    config, study = load_run_study(run_dir)
    trials = study.get_trials(deepcopy=False)
    directions = [d.name.lower() for d in study.directions]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = [t for t in trials if t.state == TrialState.FAIL and is_finished(t)]
    info: dict[str, Any] = {
        "name": config.name,
        "run_dir": str(Path(run_dir)),
        "sampler": config.search.sampler,
        "n_target": int(study.user_attrs.get("n_target", config.search.n_trials)),
        "n_complete": len(complete),
        "n_failed": len(failed),
        "n_interrupted": sum(t.state == TrialState.FAIL and not is_finished(t) for t in trials),
        "n_running": sum(t.state == TrialState.RUNNING for t in trials),
        "n_waiting": sum(t.state == TrialState.WAITING for t in trials),
        "objective_names": study.user_attrs.get(
            "objective_names", [f"objective{i}" for i in range(len(directions))]
        ),
        "directions": directions,
        "best": None,
        "errors": [
            {"trial": t.number, "error": t.user_attrs.get("error", "")} for t in failed[-5:]
        ],
    }
    if complete:
        front = study.best_trials
        maximize = directions[0] == "maximize"
        ordered = sorted(front, key=lambda t: -t.values[0] if maximize else t.values[0])
        info["best"] = _entry(study.best_trial if len(directions) == 1 else ordered[0])
        if len(directions) > 1:
            info["pareto"] = [_entry(t) for t in ordered]
    elif len(directions) > 1:
        info["pareto"] = []
    return info


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


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
        f"{info['n_waiting']} waiting, {info['n_interrupted']} interrupted; target {info['n_target']}",
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
