"""Resume: SIGKILL the `evomerge search` driver mid-search, run the same command again."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from optuna.trial import TrialState

from evomerge.exceptions import ConfigError
from evomerge.run import INTERRUPTED_ERROR, open_run, write_run_yaml
from evomerge.search import run_search

from .conftest import start_cli, trial_counts

TARGET = 12


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _counts(run_dir: Path) -> tuple[int, int, int]:
    return trial_counts(run_dir)


def _search(
    run_yaml: Path, run_dir: Path, env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    args = ["search", str(run_yaml), "--run-dir", str(run_dir), "--workers", "1", "--quiet"]
    proc: subprocess.Popen[bytes] = start_cli(args, env=env, log=log)
    return proc


def test_sigkill_then_same_command_resumes(
    tiny_models: Any, run_yaml: Any, reap: Any, tmp_path: Path
) -> None:
    path = run_yaml(
        tmp_path / "run.yaml",
        tiny_models.as_dict(),
        name="resume",
        options={"sleep_s": 0.4},
        search={"n_trials": TARGET, "population_size": 4},
        workers={"cpus_per_worker": 1},
    )
    run_dir = tmp_path / "rd"
    ray_tmp = tempfile.mkdtemp(prefix="evk", dir="/tmp")  # this test's Ray processes carry it
    env = {**os.environ, "RAY_TMPDIR": ray_tmp}
    try:
        first = _search(path, run_dir, env, tmp_path / "first.log")
        deadline = time.monotonic() + 240
        while not (_counts(run_dir)[0] >= 3 and _counts(run_dir)[2] >= 1):  # mid-trial
            assert first.poll() is None, (tmp_path / "first.log").read_text()
            assert time.monotonic() < deadline, "the first search did not complete 3 trials in time"
            time.sleep(0.2)
        tree = [
            p
            for p in psutil.Process(first.pid).children(recursive=True)
            if "_watchdog.py" not in " ".join(p.cmdline())
        ]
        assert any("Agent" in p.name() or "Agent" in " ".join(p.cmdline()) for p in tree)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        # the watchdog ends the local cluster's orphans (Ray's agents outlive a killed
        # driver by about a minute on their own)
        gone_by = time.monotonic() + 15
        while time.monotonic() < gone_by and any(_alive(p) for p in tree):
            time.sleep(0.2)
        assert not [p for p in tree if _alive(p)], [p.name() for p in tree if _alive(p)]
        reap(ray_tmp)  # the killed driver's local Ray cluster, should anything be left
        done_before, _, running_before = _counts(run_dir)
        study = open_run(run_dir).study.study
        kept = {
            t.number: (t.values, t.datetime_complete)
            for t in study.trials
            if t.state == TrialState.COMPLETE
        }
        assert 3 <= done_before < TARGET
        assert running_before >= 1  # the driver died with a trial in flight

        second = _search(path, run_dir, env, tmp_path / "second.log")
        seen = []
        while second.poll() is None:
            seen.append(_counts(run_dir)[0])
            assert time.monotonic() < deadline + 240, "the resumed search did not finish in time"
            time.sleep(0.3)
        assert second.returncode == 0, (tmp_path / "second.log").read_text()
    finally:
        reap(ray_tmp)

    seen.append(_counts(run_dir)[0])
    assert seen == sorted(seen) and seen[0] >= done_before  # the completed count never goes down
    complete, failed, running = _counts(run_dir)
    assert complete + failed == TARGET and running == 0
    study = open_run(run_dir).study.study
    for number, (values, finished_at) in kept.items():  # completed trials are never re-run
        t = study.trials[number]
        assert (
            t.state == TrialState.COMPLETE
            and t.values == values
            and t.datetime_complete == finished_at
        )
    lost = [t for t in study.trials if t.user_attrs.get("interrupted")]
    assert len(lost) == running_before >= 1  # what the dead driver left running was failed...
    for t in lost:
        assert t.state == TrialState.FAIL and t.user_attrs["error"] == INTERRUPTED_ERROR
        again = [r for r in study.trials if r.user_attrs.get("retry_of") == t.number]
        assert (
            len(again) == 1 and again[0].params == t.params
        )  # ...and re-asked with its parameters
        assert again[0].state == TrialState.COMPLETE
    gens = [t.system_attrs.get("cma:generation") for t in study.trials if t.number > max(kept)]
    assert max(g for g in gens if g is not None) >= 1  # CMA-ES went on from its stored state


def test_resume_refuses_a_changed_config(tiny_models: Any, run_yaml: Any, tmp_path: Path) -> None:
    run_dir = tmp_path / "rd"
    run_dir.mkdir()
    first = run_yaml(
        tmp_path / "a.yaml", tiny_models.as_dict(), name="same", search={"sampler": "cmaes"}
    )
    from evomerge.config import load_run_config

    write_run_yaml(run_dir, load_run_config(first))  # as a first search would have
    changed = run_yaml(
        tmp_path / "b.yaml", tiny_models.as_dict(), name="same", search={"sampler": "tpe"}
    )
    with pytest.raises(ConfigError, match=r"search.sampler: 'cmaes' \(run dir\) != 'tpe' \(now\)"):
        run_search(changed, run_dir=run_dir, progress=False)


def test_sigkill_with_two_trials_per_worker_then_resume_loses_and_doubles_nothing(
    tiny_models: Any, run_yaml: Any, reap: Any, tmp_path: Path
) -> None:
    """search.overlap_judging: the driver is killed while its worker holds two trials (one
    generating, one judging); the resume fails both as interrupted, re-asks each once with
    its parameters, and finishes exactly the target."""
    path = run_yaml(
        tmp_path / "run.yaml",
        tiny_models.as_dict(),
        name="resume_overlap",
        factory="evomerge.testing.search:staged_quadratic_evaluator",
        options={"sleep_s": 0.5, "judge_sleep_s": 0.5},
        search={"n_trials": 10, "population_size": 4, "overlap_judging": True},
        workers={"cpus_per_worker": 1},
    )
    run_dir = tmp_path / "rd"
    ray_tmp = tempfile.mkdtemp(prefix="evo", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": ray_tmp}
    try:
        first = _search(path, run_dir, env, tmp_path / "first.log")
        deadline = time.monotonic() + 240
        while not (_counts(run_dir)[0] >= 3 and _counts(run_dir)[2] >= 2):  # two in flight
            assert first.poll() is None, (tmp_path / "first.log").read_text()
            assert time.monotonic() < deadline, "no moment with 3 complete and 2 in flight"
            time.sleep(0.1)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        reap(ray_tmp)
        done_before, _, running_before = _counts(run_dir)
        study = open_run(run_dir).study.study
        kept = {t.number: t.values for t in study.trials if t.state == TrialState.COMPLETE}
        assert len(kept) == done_before >= 3
        assert running_before == 2  # both of the worker's trials were in flight
        second = _search(path, run_dir, env, tmp_path / "second.log")
        assert second.wait(timeout=240) == 0, (tmp_path / "second.log").read_text()
    finally:
        reap(ray_tmp)
    complete, failed, running = _counts(run_dir)
    assert (complete, failed, running) == (10, 0, 0)
    study = open_run(run_dir).study.study
    for number, values in kept.items():  # completed trials are kept, not re-run
        assert study.trials[number].values == values
    lost = [t for t in study.trials if t.user_attrs.get("interrupted")]
    assert len(lost) == 2
    for t in lost:  # each re-asked exactly once, with its parameters, and completed
        again = [r for r in study.trials if r.user_attrs.get("retry_of") == t.number]
        assert len(again) == 1 and again[0].params == t.params
        assert again[0].state == TrialState.COMPLETE
    # nothing counted twice: the finished trials are the kept ones, the two re-runs and
    # new ones, and the study holds exactly those plus the two interrupted records
    assert len(study.trials) == 10 + 2
