"""The data-flow demonstration: sources whose skills live in different layers (style in
``style``'s lower layers, facts in ``facts``' upper layers); a small real ``dataflow``
search (local Ray, CMA-ES, hf generator, local judges) must find a path that beats both
sources and the start point on the held-out prompts. Reduced size in the default run,
the benchmark's size as a slow test."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from evomerge.testing.dataflow_demo import SUMMARY_JSON, run_dataflow_demo

pytestmark = pytest.mark.usefixtures("ray_local")


def _cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = os.environ.get("EVOMERGE_CACHE")
    return Path(root) / "dataflow_demo" if root else tmp_path_factory.mktemp("dfs_models")


def _check(result: dict[str, Any], run_dir: Path) -> None:
    held = result["heldout"]
    best = held["best path"]["value"]
    start, facts = held["style (= start point)"]["value"], held["facts"]["value"]
    assert result["beats_all_heldout"] and best > max(start, facts) + 0.2, result["table"]
    # the path matters: the best path takes layers from both sources, and has both skills
    assert {s for s, _, _ in result["best_slots"]} == {"style", "facts"}
    scores = held["best path"]["scores"]
    assert scores["style"] >= 0.9 and scores["facts"] > 0.3, result["table"]
    assert held["style (= start point)"]["scores"]["facts"] < 0.2  # the start point lacks facts
    assert held["facts"]["scores"]["style"] < 0.2  # the facts source lacks the register
    saved = json.loads((run_dir / SUMMARY_JSON).read_text())
    assert saved["best_path"] == result["best_path"]
    assert (Path(result["exported"]) / "config.json").is_file()


def test_a_small_search_finds_a_path_that_beats_both_sources(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    result = run_dataflow_demo(
        tmp_path / "dfs", size="small", trials=24, workers=1, cache_dir=_cache(tmp_path_factory)
    )
    _check(result, tmp_path / "dfs")


@pytest.mark.slow
def test_the_benchmark_size(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    result = run_dataflow_demo(
        tmp_path / "dfs", size="full", trials=40, workers=2, cache_dir=_cache(tmp_path_factory)
    )
    _check(result, tmp_path / "dfs")
