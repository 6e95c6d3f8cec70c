"""Ctrl-C and SIGTERM sent to a real `evomerge search` process: exit 130/143, one line,
no trial left RUNNING, and the same command resumes."""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState

from evomerge.interrupt import MESSAGE
from evomerge.run import open_run

from .conftest import start_cli, trial_counts

TARGET = 10


def _args(path: Path, run_dir: Path) -> list[str]:
    return ["search", str(path), "--run-dir", str(run_dir), "--workers", "1", "--quiet"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_mid_search_exits_128_plus_signum_and_the_rerun_resumes(
    sig: signal.Signals, tiny_models: Any, run_yaml: Any, reap: Any, tmp_path: Path
) -> None:
    path = run_yaml(
        tmp_path / "run.yaml",
        tiny_models.as_dict(),
        name=f"sig{int(sig)}",
        options={"sleep_s": 0.5},
        search={"n_trials": TARGET, "population_size": 4},
        workers={"cpus_per_worker": 1},
    )
    run_dir = tmp_path / "rd"
    ray_tmp = tempfile.mkdtemp(prefix="evs", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": ray_tmp}
    log = tmp_path / "first.log"
    try:
        first = start_cli(_args(path, run_dir), env=env, log=log)
        deadline = time.monotonic() + 240
        while trial_counts(run_dir)[0] < 2:
            assert first.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the search did not complete 2 trials in time"
            time.sleep(0.2)
        first.send_signal(sig)
        rc = first.wait(timeout=120)
        text = log.read_text()
        assert rc == 128 + sig, text  # not 0, not Ray's exit(15)
        assert text.count(MESSAGE) == 1, text
        assert "SIGTERM received" not in text and "Traceback" not in text, text
        complete, _, running = trial_counts(run_dir)
        assert running == 0 and 2 <= complete < TARGET
        if sig == signal.SIGINT:
            return  # the resume is the same for both signals: checked once, for SIGTERM
        second = start_cli(_args(path, run_dir), env=env, log=tmp_path / "second.log")
        assert second.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()
    finally:
        reap(ray_tmp)
    study = open_run(run_dir).study.study
    complete, failed, running = trial_counts(run_dir)
    assert complete + failed == TARGET and running == 0
    put_back = [t for t in study.trials if t.user_attrs.get("interrupted") and t.params]
    for t in put_back:  # what was in flight at the signal was re-asked with its parameters
        again = [r for r in study.trials if r.user_attrs.get("retry_of") == t.number]
        assert len(again) == 1 and again[0].state == TrialState.COMPLETE
