"""search.pruning end to end: a real search (local Ray, tiny models, hf generation, local
judges) that stops trials early; status and report count them apart; SIGKILL and resume."""

from __future__ import annotations

import json
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState

from evomerge.run import attrs as A
from evomerge.run import open_run, study_status

from .conftest import make_run, start_cli, write_run_yaml

N_PROMPTS = 10


@pytest.fixture(scope="module")
def spread_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny base and two far-apart "fine-tunes" (noise 1x each tensor's std): merges with
    other weights answer differently, so their per-prompt scores differ and some trials are
    clearly worse than the best (with the shared tiny models every merge answers alike)."""
    from evomerge.testing.tiny import build_tiny_model, perturb_model

    root = tmp_path_factory.mktemp("prune_models")
    base = build_tiny_model(root / "base", seed=0)
    return {
        "base": base,
        "ft_a": perturb_model(base, root / "ft_a", seed=1, scale=1.0),
        "ft_b": perturb_model(base, root / "ft_b", seed=2, scale=1.0),
    }


PRUNING = {"enabled": True, "chunk_size": 2, "n_startup_steps": 2, "p_threshold": 0.5}


def _run_yaml(root: Path, models: dict[str, Path], *, n_trials: int, name: str) -> Path:
    """hf generation of 8 new tokens on N_PROMPTS prompts, judged by chrF and length: the
    tiny random models' answers differ from merge to merge, so do their scores."""
    root.mkdir(parents=True, exist_ok=True)
    prompts = root / "prompts.jsonl"
    prompts.write_text(
        "".join(
            json.dumps(
                {"id": f"p{i}", "question": f"question {i}?", "reference": f"answer {i} " * 3}
            )
            + "\n"
            for i in range(N_PROMPTS)
        ),
        encoding="utf-8",
    )
    data = make_run(
        models,
        name=name,
        search={"n_trials": n_trials, "population_size": 4, "pruning": PRUNING},
        workers={"num": 1, "cpus_per_worker": 1},
    )
    del data["evaluator"]
    data["generation"] = {
        "prompts": str(prompts),
        "template": "{question}",
        "params": {"max_new_tokens": 8, "batch_size": 2},
        "dtype": "float32",
    }
    data["judging"] = {
        "judges": {
            "chrf": {"type": "chrf", "weight": 0.01},
            "length": {"type": "length", "options": {"min_chars": 40, "max_chars": 80}},
        }
    }
    data["analysis"] = {"top_k": 0, "report": True}
    return write_run_yaml(root / "run.yaml", data)


def _check_trials(run_dir: Path) -> dict[str, int]:
    """Every finished trial is COMPLETE with all prompts or PRUNED with a prefix of the
    run's prompt order, its partial scores and its ranking value (below the best's) as its
    one intermediate value, which optuna takes as its value."""
    view = open_run(run_dir).study
    best = view.best()
    assert best is not None
    study = view.study
    order = study.user_attrs[A.PROMPT_ORDER]
    assert sorted(order) == sorted(f"p{i}" for i in range(N_PROMPTS)) and order != sorted(order)
    counts = {"complete": 0, "pruned": 0}
    for t in study.get_trials(deepcopy=False):
        scores = t.user_attrs.get(A.PROMPT_SCORES)
        if t.state == TrialState.COMPLETE:
            counts["complete"] += 1
            assert scores is not None and len(scores) == N_PROMPTS
            judged = t.user_attrs[A.PROMPT_JUDGE_SCORES]
            assert set(judged) == {"chrf", "length"}
            assert all(len(v) == N_PROMPTS for v in judged.values())
        elif t.state == TrialState.PRUNED:
            counts["pruned"] += 1
            k = len(scores)
            assert PRUNING["n_startup_steps"] <= k < N_PROMPTS
            assert t.user_attrs[A.PROMPT_IDS] == order[:k]
            value = t.user_attrs[A.PRUNED_VALUE]
            assert t.intermediate_values == {k: value} and t.value == value < best.values[0]
            assert A.PARTIAL_VALUES in t.user_attrs and t.user_attrs[A.SCORES]
    return counts


def test_sigkill_mid_pruned_search_then_resume_loses_and_double_counts_nothing(
    spread_models: dict[str, Path], reap: Any, tmp_path: Path
) -> None:
    target = 12
    path = _run_yaml(tmp_path / "cfg", spread_models, n_trials=target, name="prkill")
    run_dir = tmp_path / "rd"
    ray_tmp = tempfile.mkdtemp(prefix="evp", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": ray_tmp}
    args = ["search", str(path), "--run-dir", str(run_dir), "--workers", "1", "--quiet"]

    def states() -> tuple[int, int, int]:
        """finished (complete + pruned + failed), pruned, running with its parameters set
        (a trial just asked has none yet; it is not re-asked, there is nothing to re-ask)"""
        try:
            view = open_run(run_dir).study
            c = view.counts()
            sampled = sum(t.state == TrialState.RUNNING and bool(t.params) for t in view.trials())
        except Exception:
            return 0, 0, 0
        return c.finished, c.pruned, sampled

    try:
        first = start_cli(args, env=env, log=tmp_path / "first.log")
        deadline = time.monotonic() + 300
        while not (states()[0] >= 4 and states()[1] >= 1 and states()[2] >= 1):
            assert first.poll() is None, (tmp_path / "first.log").read_text()
            assert time.monotonic() < deadline, "no pruned trial in time"
            time.sleep(0.1)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        reap(ray_tmp)
        study = open_run(run_dir).study.study
        kept = {
            t.number: (t.state, t.user_attrs.get(A.PROMPT_SCORES))
            for t in study.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        }
        running = [
            t.number
            for t in study.get_trials(deepcopy=False)
            if t.state == TrialState.RUNNING and t.params
        ]
        bare = [  # asked, killed before its parameters were set: failed, not re-asked
            t.number
            for t in study.get_trials(deepcopy=False)
            if t.state == TrialState.RUNNING and not t.params
        ]
        assert running and len(kept) < target
        second = start_cli(args, env=env, log=tmp_path / "second.log")
        assert second.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()
    finally:
        reap(ray_tmp)
    study = open_run(run_dir).study.study
    trials = study.get_trials(deepcopy=False)
    for number, (state, scores) in kept.items():  # finished trials are kept as they were
        assert (
            trials[number].state == state
            and trials[number].user_attrs.get(A.PROMPT_SCORES) == scores
        )
    for number in running:  # failed as interrupted, re-asked exactly once
        assert trials[number].state == TrialState.FAIL and trials[number].user_attrs[A.INTERRUPTED]
        assert sum(t.user_attrs.get(A.RETRY_OF) == number for t in trials) == 1
    for number in bare:
        assert trials[number].state == TrialState.FAIL
        assert not any(t.user_attrs.get(A.RETRY_OF) == number for t in trials)
    counts = open_run(run_dir).study.counts()
    assert counts.finished == target and counts.running == 0 and counts.waiting == 0
    assert counts.complete + counts.pruned + counts.failed == target
    _check_trials(run_dir)


@pytest.mark.usefixtures("ray_local")
def test_a_pruned_search_stops_hopeless_trials_and_counts_them_apart(
    spread_models: dict[str, Path], tmp_path: Path
) -> None:
    from evomerge.report import write_report
    from evomerge.search import run_search

    path = _run_yaml(tmp_path / "cfg", spread_models, n_trials=8, name="pruned")
    run_dir = tmp_path / "rd"
    summary = run_search(path, run_dir=run_dir, progress=False)
    counts = _check_trials(run_dir)
    assert counts["pruned"] >= 1 and counts["complete"] >= 1
    assert summary.n_pruned == counts["pruned"] and summary.n_complete == counts["complete"]
    assert summary.n_complete + summary.n_pruned + summary.n_failed == 8
    status = study_status(run_dir)
    assert status["n_pruned"] == counts["pruned"] and status["n_complete"] == counts["complete"]
    best = open_run(run_dir).study.best()
    assert best is not None and best.state == TrialState.COMPLETE
    html = write_report(run_dir).read_text(encoding="utf-8")
    assert f"pruned: {counts['pruned']}" in html
