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
from optuna.trial import FrozenTrial

from evomerge.run import ANALYSIS_DIR, BASELINES_JSON, StudyView, attrs, open_run

logger = logging.getLogger(__name__)

__all__ = ["ReportData", "TrialRow", "load_report_data"]


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
    path: dict[str, Any] | None = None  # a data-flow trial's path (LayerPath.to_dict)

    @property
    def complete(self) -> bool:
        return self.state == "COMPLETE" and self.values is not None


@dataclass
class ReportData:
    """Everything the report draws: trials in order, objectives, best/Pareto, extras.

    ``best`` and ``front`` are the run layer's (:meth:`StudyView.best`,
    :meth:`StudyView.pareto`): ``front[0]`` is ``best``.
    """

    name: str
    run_dir: Path
    sampler: str
    objective_names: list[str]
    directions: list[str]
    trials: list[TrialRow]
    best: TrialRow | None
    front: list[TrialRow]  # the Pareto front, best first ([best] with one objective)
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
        scores={k: float(v) for k, v in (t.user_attrs.get(attrs.SCORES) or {}).items()},
        timings={k: float(v) for k, v in (t.user_attrs.get(attrs.TIMINGS) or {}).items()},
        samples=list(t.user_attrs.get(attrs.SAMPLES) or []),
        error=t.user_attrs.get(attrs.ERROR),
        path=t.user_attrs.get(attrs.PATH),
    )


def _importances(view: StudyView, n_complete: int) -> dict[str, float]:
    """Parameter importance of the first objective (PED-ANOVA, no extra dependency)."""
    if n_complete < 4:
        return {}
    study = view.study
    try:
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()
        if len(study.directions) == 1:
            imp = optuna.importance.get_param_importances(study, evaluator=evaluator)
        else:  # PED-ANOVA looks for low target values: flip a maximized first objective
            sign = -1.0 if view.directions[0] == "maximize" else 1.0
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
    path = run_dir / BASELINES_JSON
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
    run = open_run(run_dir)
    view = run.study
    rows = {t.number: _row(t) for t in view.trials()}
    best = view.best()
    analysis = run.dir / ANALYSIS_DIR
    return ReportData(
        name=run.config.name,
        run_dir=run.dir,
        sampler=str(view.attr(attrs.SAMPLER, run.config.search.sampler)),
        objective_names=view.objective_names,
        directions=view.directions,
        trials=list(rows.values()),
        best=rows[best.number] if best is not None else None,
        front=[rows[t.number] for t in view.pareto()],
        importances=_importances(view, view.counts().complete),
        baselines=_baselines(run.dir),
        conflict_images=sorted(analysis.glob("*.png")) if analysis.is_dir() else [],
    )
