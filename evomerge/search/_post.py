"""After a finished search: the HTML report and the top-K task-vector conflict analysis.

Both are optional extras: a missing module or a failure is logged, never raised, so a
finished search is never reported as failed because of them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from evomerge.config import RunConfig

logger = logging.getLogger(__name__)

__all__ = ["post_search", "top_trials"]

#: Candidates are merged in memory for the analysis up to this many bytes in all.
ANALYSIS_MEMORY_BUDGET = 2 << 30


def top_trials(study: optuna.Study, k: int) -> list[FrozenTrial]:
    """The best ``k`` complete trials: by value for one objective, else the Pareto front
    (ordered by the first objective)."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done or k <= 0:
        return []
    if len(study.directions) == 1:
        sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
        return sorted(done, key=lambda t: sign * float(t.values[0]))[:k]
    sign = -1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return sorted(study.best_trials, key=lambda t: sign * float(t.values[0]))[:k]


def _write_report(run_dir: Path) -> None:
    try:
        from evomerge.report import write_report
    except ImportError:
        logger.debug("evomerge.report.write_report not available; no report written")
        return
    try:
        path = write_report(run_dir)
        logger.info("report: %s", path)
    except Exception as err:
        logger.warning("could not write the report: %s: %s", type(err).__name__, err)


def _analyze(run_dir: Path, config: RunConfig, study: optuna.Study) -> None:
    k = config.analysis.top_k
    if k <= 0:
        return
    try:
        from evomerge.analysis import analyze_candidates, write_conflict_outputs
        from evomerge.merge import iter_merged_tensors
    except ImportError:
        logger.debug("evomerge.analysis.analyze_candidates not available; no conflict analysis")
        return
    import torch

    from evomerge.merge.recipe import MergeRecipe
    from evomerge.search._build import open_pool

    trials = [t for t in top_trials(study, k) if "recipe" in t.user_attrs]
    if not trials:
        return
    try:
        pool = open_pool(config)
        need = pool.nbytes(torch.float32) * len(trials)
        if need > ANALYSIS_MEMORY_BUDGET:
            logger.info(
                "skipping the top-%d conflict analysis (%.1f GiB in memory); export the trials and run "
                "`evomerge conflicts` on them instead",
                len(trials),
                need / 2**30,
            )
            return
        merged: dict[str, Any] = {}
        for t in trials:
            recipe = MergeRecipe.from_mergekit_dict(
                t.user_attrs["recipe"], source=f"trial {t.number}"
            )
            tensors = dict(iter_merged_tensors(recipe, pool, seed=config.merge.seed))
            merged[f"trial{t.number}"] = tensors.__getitem__
        report = analyze_candidates(pool, merged)
        write_conflict_outputs(report, Path(run_dir) / "analysis")
        logger.info(
            "conflict analysis of the top %d trial(s): %s", len(trials), Path(run_dir) / "analysis"
        )
    except Exception as err:
        logger.warning("top-K conflict analysis failed: %s: %s", type(err).__name__, err)


def post_search(run_dir: Path, config: RunConfig, study: optuna.Study) -> None:
    """The report and the conflict analysis of a finished search (each optional)."""
    _analyze(run_dir, config, study)
    if config.analysis.report:
        _write_report(run_dir)
