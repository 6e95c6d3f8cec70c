"""``evomerge search``: a search session, then, when it finished, the post-search steps."""

from __future__ import annotations

import logging
from pathlib import Path

from evomerge.config import load_run_config
from evomerge.orchestrate._post import post_search
from evomerge.search import SearchSummary, default_run_dir, run_search

logger = logging.getLogger(__name__)

__all__ = ["search_and_report"]


def search_and_report(
    run_yaml: str | Path,
    *,
    run_dir: str | Path | None = None,
    address: str | None = None,
    workers: int | None = None,
    max_trials: int | None = None,
    progress: bool = True,
) -> SearchSummary:
    """:func:`evomerge.search.run_search`, then :func:`post_search` when the search reached
    its target (``stopped == "done"``). Same arguments, return value and errors."""
    if run_dir is None:
        run_dir = default_run_dir(load_run_config(run_yaml))
    summary = run_search(
        run_yaml,
        run_dir=run_dir,
        address=address,
        workers=workers,
        max_trials=max_trials,
        progress=progress,
    )
    if summary.stopped == "done":
        post_search(run_dir)
    return summary
