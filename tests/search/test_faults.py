"""A search whose judge endpoint is down or goes down: the real generate-and-judge pipeline
(hf generation on tiny models, an LLM judge over real HTTP), run with `evomerge search`.

Infrastructure failures stop the search early with a clear message and a non-zero exit;
what finished is kept and the rest resumes. A search where every candidate fails on its
own also exits non-zero.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from evomerge.cli import app
from evomerge.run import open_run
from evomerge.search._workers import ray_cause
from evomerge.testing.openai_server import FakeOpenAIServer

from .conftest import make_run, trial_counts, write_run_yaml

pytestmark = pytest.mark.usefixtures("ray_local")

runner = CliRunner()

JUDGE_YAML = """\
system_prompt: You are a test judge.
user_template: "Question: {question}\\nAnswer: {answer}\\nScore 1-7 on the last line."
scale: {min: 1, max: 7}
parsing: last_line_integer
max_tokens: 8
"""


def _pipeline_run(root: Path, models: dict[str, Path], endpoint: str, *, n_trials: int = 6) -> Path:
    """A run.yaml with hf generation (2 prompts, 4 new tokens) and one LLM judge."""
    root.mkdir(parents=True, exist_ok=True)
    prompts = root / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"question": q}) + "\n" for q in ("hello there", "who are you?")),
        encoding="utf-8",
    )
    judges = root / "judges"
    judges.mkdir(exist_ok=True)
    (judges / "stub.yaml").write_text(JUDGE_YAML, encoding="utf-8")
    data = make_run(models, name="judged", search={"n_trials": n_trials, "retries": 1})
    del data["evaluator"]
    data["workers"]["num"] = 1
    data["generation"] = {
        "prompts": str(prompts),
        "template": "{question}",
        "params": {"max_new_tokens": 4},
        "dtype": "float32",
    }
    data["judging"] = {
        "cache": False,  # every trial asks the endpoint, even for an answer seen before
        "judges_dirs": [str(judges)],
        "judges": {"stub": {"type": "stub", "endpoint": endpoint, "model": "m", "max_attempts": 2}},
    }
    return write_run_yaml(root / "run.yaml", data)


def _search(path: Path, run_dir: Path) -> Any:
    return runner.invoke(app, ["search", str(path), "--run-dir", str(run_dir), "--quiet"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_judge_that_is_down_stops_the_search_early_and_nothing_is_spent(
    tiny_models: Any, tmp_path: Path
) -> None:
    path = _pipeline_run(
        tmp_path, tiny_models.as_dict(), f"http://127.0.0.1:{_free_port()}/v1", n_trials=20
    )
    result = _search(path, tmp_path / "rd")
    assert result.exit_code == 2, result.output
    assert "stopped after 3 evaluation(s) in a row failed" in result.output
    assert "connection error" in result.output and "run the same command again" in result.output
    complete, failed, running = trial_counts(tmp_path / "rd")
    assert (complete, failed, running) == (0, 0, 0)  # no trial was told FAIL for the judge
    study = open_run(tmp_path / "rd").study.study
    waiting = [t for t in study.trials if t.state == TrialState.WAITING]
    assert waiting and all(t.user_attrs.get("retry_of") is not None for t in waiting)


def test_a_judge_that_fails_mid_search_keeps_what_finished_and_the_rerun_resumes(
    tiny_models: Any, tmp_path: Path
) -> None:
    with FakeOpenAIServer(reply="fine\n5") as srv:
        # 2 prompts per trial: the first 3 trials are judged, then the endpoint answers 500
        srv.fail_if = lambda req: 500 if srv.request_count > 6 else None
        path = _pipeline_run(tmp_path, tiny_models.as_dict(), srv.url, n_trials=6)
        result = _search(path, tmp_path / "rd")
        assert result.exit_code == 2, result.output
        assert "HTTP 500" in result.output and "3/6 trials finished and are kept" in result.output
        assert trial_counts(tmp_path / "rd") == (3, 0, 0)
        kept = {
            t.number: t.values
            for t in open_run(tmp_path / "rd").study.study.trials
            if t.state == TrialState.COMPLETE
        }
        srv.fail_if = None  # the endpoint is back
        again = _search(path, tmp_path / "rd")
        assert again.exit_code == 0, again.output
    assert trial_counts(tmp_path / "rd") == (6, 0, 0)
    study = open_run(tmp_path / "rd").study.study
    assert all(study.trials[n].values == v for n, v in kept.items())


def test_a_search_that_completes_no_trial_exits_non_zero(
    tiny_models: Any, run_yaml: Any, tmp_path: Path
) -> None:
    path = run_yaml(
        tmp_path / "run.yaml",
        tiny_models.as_dict(),
        name="nothing",
        options={"fail_trials": list(range(10)), "fail_message": "the candidate is broken"},
        search={"n_trials": 2, "population_size": 4, "retries": 0},
    )
    result = _search(path, tmp_path / "rd")
    assert result.exit_code == 2, result.output
    assert "no trial completed" in result.output and "the candidate is broken" in result.output


def test_a_worker_error_keeps_its_whole_message(tiny_models: Any, tmp_path: Path) -> None:
    """Errors raised on a worker come back with every line of their message (without Ray's
    traceback and colour codes), not only the last line: a worker whose evaluator cannot
    read its prompt set, and a task raising the same error."""
    import ray

    from evomerge.config import load_run_config
    from evomerge.generate import load_prompt_set
    from evomerge.search._worker import Worker

    path = _pipeline_run(tmp_path, tiny_models.as_dict(), "http://127.0.0.1:9/v1")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"question": "ok"}\n{bad\n{"question": ""}\n[1]\n', encoding="utf-8")
    data = load_run_config(path).model_dump(mode="json")
    worker = ray.remote(Worker).options(num_cpus=0.5).remote(data, str(tmp_path), 0, "cpu")
    with pytest.raises(ray.exceptions.RayError) as info:
        ray.get(worker.describe.remote())
    cause = ray_cause(info.value)
    assert f"ConfigError: {prompts}: 3 invalid line(s)\n" in cause, cause
    for line in (2, 3, 4):
        assert f"{prompts}:{line}: " in cause
    assert "\x1b[" not in cause and 'File "' not in cause
    task = ray.remote(load_prompt_set).options(num_cpus=0.5).remote(str(prompts))
    with pytest.raises(ray.exceptions.RayError) as info:
        ray.get(task)
    assert ray_cause(info.value) == cause


def test_a_full_disk_stops_the_search_with_one_line_and_the_rerun_resumes(
    tiny_models: Any, run_yaml: Any, small_disk: Any, tmp_path: Path
) -> None:
    disk = small_disk("runs", "4m")
    run_dir = disk / "rd"
    path = run_yaml(
        tmp_path / "run.yaml",
        tiny_models.as_dict(),
        name="fulldisk",
        options={"sleep_s": 0.3},
        search={"n_trials": 10, "population_size": 4},
        workers={"num": 1},
    )
    fillers: list[Path] = []

    def fill_after_two_trials() -> None:
        deadline = time.monotonic() + 300
        while trial_counts(run_dir)[0] < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        fillers.append(small_disk.fill(disk))

    filler_thread = threading.Thread(target=fill_after_two_trials, daemon=True)
    filler_thread.start()
    result = _search(path, run_dir)
    filler_thread.join(timeout=60)
    assert result.exit_code == 2, result.output
    journal = run_dir / "study.journal"
    error = next(line for line in result.output.splitlines() if line.startswith("error: "))
    assert error.startswith(f"error: no space left on the device of {journal}"), error
    assert "free some space" in error and "every trial told before is kept" in error
    assert "Traceback" not in result.output
    assert journal.read_bytes().endswith(b"\n")  # no partial line
    study = open_run(run_dir).study.study
    kept = {t.number: t.values for t in study.trials if t.state == TrialState.COMPLETE}
    assert len(kept) >= 2
    fillers[0].unlink()  # space again
    again = _search(path, run_dir)
    assert again.exit_code == 0, again.output
    complete, failed, running = trial_counts(run_dir)
    assert complete + failed == 10 and running == 0
    study = open_run(run_dir).study.study
    assert all(study.trials[n].values == v for n, v in kept.items())


def test_a_read_only_run_directory_is_one_line_and_exit_2(
    tiny_models: Any, run_yaml: Any, small_disk: Any, tmp_path: Path
) -> None:
    disk = small_disk("ro", "1m")
    small_disk.read_only(disk)
    path = run_yaml(tmp_path / "run.yaml", tiny_models.as_dict(), name="ro")
    result = _search(path, disk / "rd")
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {disk / 'rd'} is on a read-only file system")
    assert "Traceback" not in result.output
