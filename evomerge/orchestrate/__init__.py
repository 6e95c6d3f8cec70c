"""Orchestration: a search, then the steps that follow it (conflict analysis, report).

::

    summary = search_and_report("run.yaml", run_dir="runs/x")   # the `evomerge search` command
    post_search("runs/x")                                        # the post-search steps alone

Above search, export, report and analysis; below the demo and the CLI (see ARCHITECTURE.md).
"""

from evomerge.orchestrate._post import ANALYSIS_MEMORY_BUDGET, post_search
from evomerge.orchestrate._search import search_and_report

__all__ = ["ANALYSIS_MEMORY_BUDGET", "post_search", "search_and_report"]
