"""The Ray driver on a local cluster: real workers, real tiny models, real merges.

Two searches are run once per module and checked by several tests: a CMA-ES search whose
objective comes from the real MergeEngine, and one with injected faults (a raising trial,
a worker that dies, a slow trial).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from optuna.trial import TrialState
from typer.testing import CliRunner

from evomerge.config import load_run_config
from evomerge.exceptions import ExportError, SearchError
from evomerge.export import export_trial
from evomerge.merge import MergeEngine
from evomerge.merge.recipe import MergeRecipe
from evomerge.run import build_space, format_status, open_pool, open_run, study_status
from evomerge.search import run_search

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture(scope="module")
def weight_run(
    ray_local: None, tiny_models: Any, run_yaml: Any, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("weight_run")
    path = run_yaml(
        root / "run.yaml",
        tiny_models.as_dict(),
        name="weights",
        factory="evomerge.testing.search:weight_distance_evaluator",
        search={"n_trials": 12, "population_size": 4},
    )
    summary = run_search(path, run_dir=root / "rd", progress=False)
    return {"yaml": path, "run_dir": root / "rd", "summary": summary}


@pytest.fixture(scope="module")
def fault_run(
    ray_local: None, tiny_models: Any, run_yaml: Any, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("fault_run")
    path = run_yaml(
        root / "run.yaml",
        tiny_models.as_dict(),
        name="faults",
        options={
            "fail_trials": [2],
            "fail_message": "boom from the judge",
            "crash_once_trials": [14],
            "slow_trials": {5: 6.0},
            "sleep_s": 0.05,
        },
        search={"n_trials": 20, "population_size": 4, "retries": 1},
    )
    summary = run_search(path, run_dir=root / "rd", progress=False)
    study = open_run(root / "rd").study.study
    return {
        "run_dir": root / "rd",
        "summary": summary,
        "trials": {t.number: t for t in study.trials},
    }


# -- a search on real merges ------------------------------------------------------------


def test_search_finds_a_better_recipe_than_the_start_point(weight_run: dict[str, Any]) -> None:
    summary = weight_run["summary"]
    assert summary.stopped == "done" and summary.n_complete == 12 and summary.n_failed == 0
    study = open_run(weight_run["run_dir"]).study.study
    start = [t for t in study.trials if t.user_attrs.get("start_point")]
    assert len(start) == 1 and start[0].number == 0  # x0 enqueued first
    assert start[0].values[0] == pytest.approx(-1.0, abs=1e-6)  # the objective's definition
    assert summary.best_values[0] > -0.9  # clearly closer to the hidden target than x0
    assert summary.best_trial != 0


def test_trials_keep_their_recipe_timings_and_worker(weight_run: dict[str, Any]) -> None:
    config = load_run_config(weight_run["yaml"])
    space = build_space(config)
    study = open_run(weight_run["run_dir"]).study.study
    for t in study.trials:
        assert t.state == TrialState.COMPLETE
        recipe = MergeRecipe.from_mergekit_dict(t.user_attrs["recipe"])
        np.testing.assert_allclose(space.encode(recipe), space.from_params(t.params), atol=1e-12)
        assert recipe.models[0].model == str(
            config.models.sources[0]
        )  # mergekit-loadable references
        assert t.user_attrs["timings"]["merge_s"] >= 0 and t.user_attrs["node_id"]
        assert t.user_attrs["worker"] in ("0", "1")


def test_status_json_and_table(weight_run: dict[str, Any]) -> None:
    from evomerge.cli import app

    result = CliRunner().invoke(app, ["status", str(weight_run["run_dir"]), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert (info["n_complete"], info["n_failed"], info["n_running"]) == (12, 0, 0)
    assert info["directions"] == ["maximize"] and "pareto" not in info
    assert info["best"]["trial"] == weight_run["summary"].best_trial
    assert info["best"]["values"] == pytest.approx(weight_run["summary"].best_values)
    assert info["best"]["recipe"]["merge_method"] == "linear"
    table = format_status(study_status(weight_run["run_dir"]))
    assert f"best: trial {info['best']['trial']}: closeness=" in table and "12 complete" in table


def test_export_then_mergekit_reproduces_the_weights(
    weight_run: dict[str, Any], mergekit_merge: Any, weights_of: Any, tmp_path: Path
) -> None:
    out = export_trial(weight_run["run_dir"], tmp_path / "export", trial="best")
    files = {p.name for p in out.iterdir()}
    assert {
        "config.json",
        "mergekit.yaml",
        "README.md",
        "model.safetensors",
        "tokenizer.json",
    } <= files
    card = (out / "README.md").read_text()
    best = weight_run["summary"].best_trial
    assert f"trial {best}" in card and "closeness" in card and "mergekit-yaml mergekit.yaml" in card
    exported = weights_of(out)

    # the exported model is the one the search evaluated (same engine numerics)
    config = load_run_config(weight_run["yaml"])
    recipe = MergeRecipe.from_yaml(out / "mergekit.yaml")
    engine = MergeEngine(open_pool(config), seed=config.merge.seed, methods=["linear"])
    for name, t in engine.materialize(recipe).items():
        torch.testing.assert_close(exported[name], t, rtol=0, atol=0)

    # and mergekit-yaml on the exported YAML gives the same tensors
    theirs = mergekit_merge(MergeRecipe.from_yaml(out / "mergekit.yaml"), tmp_path / "mergekit_out")
    assert set(theirs) == set(exported)
    for name, t in theirs.items():
        torch.testing.assert_close(exported[name], t, rtol=1e-5, atol=1e-6, msg=name)


def test_cli_export_overwrite(weight_run: dict[str, Any], tmp_path: Path) -> None:
    from evomerge.cli import app

    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("x")
    args = ["export", str(weight_run["run_dir"]), str(out), "--quiet"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "--overwrite (evomerge export" in refused.output
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    done = CliRunner().invoke(app, [*args, "--overwrite"])
    assert done.exit_code == 0, done.output
    assert (out / "model.safetensors").is_file() and not (out / "old.txt").exists()


def test_export_refuses_missing_or_failed_trials(
    weight_run: dict[str, Any], fault_run: dict[str, Any], tmp_path: Path
) -> None:
    with pytest.raises(ExportError, match="no trial 999"):
        export_trial(weight_run["run_dir"], tmp_path / "a", trial=999)
    with pytest.raises(ExportError, match=r"trial 2 is FAIL: .*boom from the judge"):
        export_trial(fault_run["run_dir"], tmp_path / "b", trial="2")
    with pytest.raises(ExportError, match="'best' or a trial number"):
        export_trial(weight_run["run_dir"], tmp_path / "c", trial="worst")


# -- faults -----------------------------------------------------------------------------


def test_a_raising_trial_fails_with_its_message_and_the_rest_complete(
    fault_run: dict[str, Any],
) -> None:
    trials, summary = fault_run["trials"], fault_run["summary"]
    failed = trials[2]
    assert failed.state == TrialState.FAIL
    assert failed.user_attrs["error"] == "RuntimeError: boom from the judge (trial 2)"
    assert failed.user_attrs["attempts"] == 2  # retried once, then told FAIL
    assert (
        "Traceback" in failed.user_attrs["traceback"]
        and "RuntimeError" in failed.user_attrs["traceback"]
    )
    assert all(t.state == TrialState.COMPLETE for n, t in trials.items() if n != 2)
    assert (summary.n_complete, summary.n_failed, summary.stopped) == (19, 1, "done")
    assert len(trials) == 20  # every trial accounted for, none re-run


def test_a_dead_worker_is_restarted_and_its_trial_retried(fault_run: dict[str, Any]) -> None:
    crashed = fault_run["trials"][14]
    assert (
        fault_run["run_dir"] / "fault_marks" / "crashed_14"
    ).exists()  # the worker process did exit
    assert crashed.state == TrialState.COMPLETE
    assert crashed.user_attrs["attempts"] == 2


def test_dispatch_does_not_wait_for_a_slow_trial(fault_run: dict[str, Any]) -> None:
    """While trial 5 sleeps 6 s, the other worker goes on, past the CMA-ES generation (popsize 4)."""
    trials = fault_run["trials"]
    slow = trials[5]
    during = [
        t
        for t in trials.values()
        if t.number != 5
        and t.datetime_start > slow.datetime_start
        and t.datetime_complete < slow.datetime_complete
    ]
    assert len(during) >= 5, [t.number for t in during]
    assert {t.user_attrs["worker"] for t in during} == {
        "1" if slow.user_attrs["worker"] == "0" else "0"
    }


@pytest.mark.gpu
def test_gpu_workers_merge_on_cuda(tiny_models: Any, run_yaml: Any, tmp_path: Path) -> None:
    """One worker per GPU, merging on it (run with -m gpu on a CUDA machine)."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    path = run_yaml(
        tmp_path / "run.yaml",
        tiny_models.as_dict(),
        name="gpu",
        factory="evomerge.testing.search:weight_distance_evaluator",
        search={"n_trials": 6},
        workers={"num": "auto", "device": "cuda", "cpus_per_worker": 1},
    )
    summary = run_search(path, run_dir=tmp_path / "rd", progress=False)
    assert summary.n_complete == 6 and summary.best_values[0] > -1.0


def test_a_worker_that_cannot_build_its_evaluator_stops_the_search_with_the_cause(
    tiny_models: Any, run_yaml: Any, tmp_path: Path
) -> None:
    path = run_yaml(
        tmp_path / "run.yaml", tiny_models.as_dict(), name="broken", options={"bogus_option": 1}
    )
    with pytest.raises(SearchError, match=r"no worker could start: .*bogus_option"):
        run_search(path, run_dir=tmp_path / "rd", progress=False)


def test_when_every_worker_is_lost_the_driver_stops_and_the_run_resumes(
    tiny_models: Any, run_yaml: Any, tmp_path: Path
) -> None:
    """Both workers die (no restarts allowed): a clean SearchError, nothing left RUNNING,
    and the same command then finishes the run, re-asking the trial that was in flight."""
    path = run_yaml(
        tmp_path / "run.yaml",
        tiny_models.as_dict(),
        name="lost",
        options={"crash_once_trials": [1, 2], "sleep_s": 0.3},
        search={"n_trials": 6},
        workers={"max_restarts": 0},
    )
    with pytest.raises(SearchError, match=r"every worker died.*run the same command again"):
        run_search(path, run_dir=tmp_path / "rd", progress=False)
    study = open_run(tmp_path / "rd").study.study
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    lost = [t for t in study.trials if t.user_attrs.get("interrupted")]
    assert lost and all(t.state == TrialState.FAIL for t in lost)

    summary = run_search(
        path, run_dir=tmp_path / "rd", progress=False
    )  # crash markers exist: no crash now
    assert (summary.stopped, summary.n_complete, summary.n_failed) == ("done", 6, 0)
    study = open_run(tmp_path / "rd").study.study
    for t in lost:
        again = [r for r in study.trials if r.user_attrs.get("retry_of") == t.number]
        assert (
            len(again) == 1
            and again[0].state == TrialState.COMPLETE
            and again[0].params == t.params
        )
