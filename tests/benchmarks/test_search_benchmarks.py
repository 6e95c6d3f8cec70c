"""The search benchmarks' ``--quick`` runs: each prints JSON whose figures are sane and vary
where they must (seeds reach the samplers, the second worker takes trials)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache of tiny demo models for both benchmarks."""
    return tmp_path_factory.mktemp("bench_cache")


def _run(script: str, cache: Path, *args: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / script),
            "--quick",
            "--cache-dir",
            str(cache),
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_search_efficiency_quick(cache: Path) -> None:
    out = _run("search_efficiency.py", cache)
    demo = out["demo"]
    budget, seeds, top = demo["budget"], demo["seeds"], demo["objective_max"]
    assert budget == 6 and len(seeds) == 2 and top == 3.0
    start = demo["baselines"]["start"]["search"]
    assert set(demo["methods"]) == {"cmaes", "tpe", "random", "uniform_grid"}
    traces: dict[str, list[list[float]]] = {}
    for name, m in demo["methods"].items():
        runs = m["runs"]
        assert len(runs) == (1 if name == "uniform_grid" else len(seeds)), name
        for r in runs:
            values = r["values"]
            assert all(0.0 <= v <= top for v in values), (name, values)
            assert r["best_so_far"] == [max(values[: i + 1]) for i in range(len(values))]
            assert r["chosen_search"] == max(values) == r["best_so_far"][-1]
            assert values.index(max(values)) == r["chosen_trial"]  # ties: the first
            assert 0.0 <= r["chosen_heldout"] <= top
            if name != "uniform_grid":
                assert len(values) == budget
                assert values[0] == start, "trial 0 is the start point, as in the search"
        assert m["search_best"]["min"] <= m["search_best"]["median"] <= m["search_best"]["max"]
        assert str(m["trials"]) in m["best_so_far"]
        traces[name] = [r["values"] for r in runs]
    # the grid: k x k points, k = 2 for a budget of 6
    grid = demo["methods"]["uniform_grid"]["runs"][0]
    assert len(grid["values"]) == 4 and grid["grid_values"] == [0.0, 1.5]
    # what it measures varies: each sampler's seed changes its trials, samplers differ
    for name in ("cmaes", "tpe", "random"):
        a, b = traces[name]
        assert a != b, f"{name}: both seeds gave the same trials; is the seed passed on?"
    assert traces["cmaes"][0] != traces["random"][0]
    assert len({v for t in traces.values() for run in t for v in run}) > 3
    # the plumbing check: CMA-ES learns from what it is told, random search does not
    q = out["quadratic"]["results"]
    for i in range(2):
        assert q["cmaes"]["best_q_per_seed"][i] > q["random"]["best_q_per_seed"][i]
    assert out["machine"]["cpus"] >= 1 and len(out["load_average"]["start"]) == 3


def test_scaling_quick(cache: Path) -> None:
    out = _run("scaling.py", cache)
    one, two = out["results"]
    assert (one["workers"], two["workers"]) == (1, 2)
    for r in (one, two):
        assert r["trials"] == 8 and r["failed"] == 0
        assert r["startup_s"] > 0 and r["search_loop_s"] > 0
        assert r["wall_s"] == pytest.approx(r["startup_s"] + r["search_loop_s"], abs=0.02)
        assert r["trials_per_hour"] > r["trials_per_hour_end_to_end"] > 0
        assert 0 < r["driver_overhead_s_per_trial"] < r["worker_eval_s_per_trial"]
        assert r["ideal_trials_per_hour"] == pytest.approx(
            r["workers"] * out["in_process"]["trials_per_hour"], rel=1e-3
        )
        assert len(r["worker_first_trial_s"]) == r["workers_used"]
        assert r["worker_first_trial_s"][0] == pytest.approx(r["startup_s"], abs=2.0)
        assert r["trials_per_hour"] == pytest.approx(8 * 3600 / r["search_loop_s"], rel=0.01)
    # the searches started 1 and 2 workers; whether the second one joins before 8 tiny
    # trials are over depends on the machine's load (the full-size run reports it)
    assert (one["workers_started"], two["workers_started"]) == (1, 2)
    assert one["workers_used"] == 1 and 1 <= two["workers_used"] <= 2
    assert out["ray_start_s"] > 0 and out["sampler_warm_up_s"] > 0
    peer = out["in_process"]
    assert peer["trials"] == 8 and peer["build_s"] > 0
    # the peer is the same objective: it scores the search's recipes exactly as the workers did
    assert peer["same_values_as_search"] == 8
