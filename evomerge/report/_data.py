"""What a report shows, read from a run directory (finished, running or interrupted)."""

from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

logger = logging.getLogger(__name__)

__all__ = ["ReportData", "TrialRow", "load_report_data"]

#: Genome parameter names are ``g{group}.{filter}.{source}.{param}`` (see evomerge.search).
_GENOME_PARTS = 4


@dataclass(frozen=True)
class TrialRow:
    """One trial, flattened to plain data."""

    number: int
    state: str
    values: list[float] | None
    params: dict[str, float]
    scores: dict[str, float]
    timings: dict[str, float]
    samples: list[dict[str, str]]
    error: str | None

    @property
    def complete(self) -> bool:
        return self.state == "COMPLETE" and self.values is not None


@dataclass
class ReportData:
    """Everything the report draws: trials in order, objectives, best/Pareto, extras."""

    name: str
    run_dir: Path
    sampler: str
    objective_names: list[str]
    directions: list[str]
    trials: list[TrialRow]
    best: list[TrialRow]  # the best trial, or the Pareto front with several objectives
    importances: dict[str, float] = field(default_factory=dict)
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)
    conflict_images: list[Path] = field(default_factory=list)

    @property
    def complete(self) -> list[TrialRow]:
        return [t for t in self.trials if t.complete]

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.trials:
            out[t.state] = out.get(t.state, 0) + 1
        return out


def _row(t: FrozenTrial) -> TrialRow:
    values = [float(v) for v in t.values] if t.values is not None else None
    return TrialRow(
        number=t.number,
        state=t.state.name,
        values=values,
        params={k: float(v) for k, v in t.params.items()},
        scores={k: float(v) for k, v in (t.user_attrs.get("scores") or {}).items()},
        timings={k: float(v) for k, v in (t.user_attrs.get("timings") or {}).items()},
        samples=list(t.user_attrs.get("samples") or []),
        error=t.user_attrs.get("error"),
    )


def _best(study: optuna.Study) -> list[FrozenTrial]:
    try:
        if len(study.directions) == 1:
            return [study.best_trial]
        return sorted(study.best_trials, key=lambda t: t.number)
    except ValueError:  # no complete trial yet
        return []


def _importances(study: optuna.Study, n_complete: int) -> dict[str, float]:
    """Parameter importance of the first objective (PED-ANOVA, no extra dependency)."""
    if n_complete < 4:
        return {}
    try:
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()
        if len(study.directions) == 1:
            imp = optuna.importance.get_param_importances(study, evaluator=evaluator)
        else:  # PED-ANOVA looks for low target values: flip a maximized first objective
            sign = -1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
            with warnings.catch_warnings():  # optuna warns about exactly this flip
                warnings.simplefilter("ignore", UserWarning)
                imp = optuna.importance.get_param_importances(
                    study, evaluator=evaluator, target=lambda t: sign * t.values[0]
                )
        return {k: float(v) for k, v in imp.items() if math.isfinite(v)}
    except Exception as err:  # importance is a nicety; never fail the report on it
        logger.info("parameter importance unavailable: %s: %s", type(err).__name__, err)
        return {}


def _baselines(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Source models evaluated like trials (``baselines.json``, written by the demo)."""
    path = run_dir / "baselines.json"
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        logger.warning("ignoring unreadable %s: %s", path, err)
        return {}
    return data if isinstance(data, dict) else {}


def load_report_data(run_dir: str | Path) -> ReportData:
    """Read the study of ``run_dir`` without writing to it (the driver may be running)."""
    from evomerge.search import load_run_study

    run_dir = Path(run_dir)
    config, study = load_run_study(run_dir)
    trials = study.get_trials(deepcopy=False)
    rows = [_row(t) for t in trials]
    n_complete = sum(1 for t in trials if t.state == TrialState.COMPLETE)
    names = study.user_attrs.get("objective_names") or [
        f"objective{i}" for i in range(len(study.directions))
    ]
    return ReportData(
        name=config.name,
        run_dir=run_dir,
        sampler=str(study.user_attrs.get("sampler", config.search.sampler)),
        objective_names=list(names),
        directions=[d.name.lower() for d in study.directions],
        trials=rows,
        best=[_row(t) for t in _best(study)],
        importances=_importances(study, n_complete),
        baselines=_baselines(run_dir),
        conflict_images=sorted((run_dir / "analysis").glob("*.png"))
        if (run_dir / "analysis").is_dir()
        else [],
    )


def split_genome_name(name: str) -> tuple[int, str, str, str] | None:
    """``g3.self_attn.a.weight`` -> (3, "self_attn", "a", "weight"); None if not a genome name."""
    parts = name.split(".")
    if len(parts) < _GENOME_PARTS or not parts[0].startswith("g") or not parts[0][1:].isdigit():
        return None
    # source names may contain dots; the filter is the 2nd part, the param the last
    return int(parts[0][1:]), parts[1], ".".join(parts[2:-1]), parts[-1]
