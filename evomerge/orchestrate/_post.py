"""After a finished search: the top-K task-vector conflict analysis and the HTML report.

Both are extras: a failure is logged, never raised, so a finished search is never
reported as failed because of them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from evomerge.analysis import analyze_candidates, write_conflict_outputs
from evomerge.merge import iter_merged_tensors
from evomerge.report import write_report
from evomerge.run import ANALYSIS_DIR, Run, attrs, open_pool, open_run

logger = logging.getLogger(__name__)

__all__ = ["ANALYSIS_MEMORY_BUDGET", "post_search"]

#: Candidates are merged in memory for the analysis up to this many bytes in all.
ANALYSIS_MEMORY_BUDGET = 2 << 30


def _write_report(run: Run) -> Path | None:
    try:
        path = write_report(run.dir)
    except Exception as err:
        logger.warning("could not write the report: %s: %s", type(err).__name__, err)
        return None
    logger.info("report: %s", path)
    return path


def _analyze(run: Run) -> None:
    k = run.config.analysis.top_k
    trials = [t for t in run.study.top_k(k) if t.user_attrs.get(attrs.RECIPE) is not None]
    if not trials:
        return
    try:
        pool = open_pool(run.config)
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
            recipe = run.study.recipe(t)
            tensors = dict(iter_merged_tensors(recipe, pool, seed=run.config.merge.seed))
            merged[f"trial{t.number}"] = tensors.__getitem__
        report = analyze_candidates(pool, merged)
        out = run.dir / ANALYSIS_DIR
        write_conflict_outputs(report, out)
        logger.info("conflict analysis of the top %d trial(s): %s", len(trials), out)
    except Exception as err:
        logger.warning("top-K conflict analysis failed: %s: %s", type(err).__name__, err)


def post_search(run_dir: str | Path) -> Path | None:
    """The conflict analysis of the top ``analysis.top_k`` trials (:meth:`StudyView.top_k`)
    and the report (``analysis.report``) of the run in ``run_dir``; each optional.

    Returns the report's path, or None when none was written."""
    run = open_run(run_dir)
    _analyze(run)
    return _write_report(run) if run.config.analysis.report else None
