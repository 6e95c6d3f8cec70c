"""``search.overlap_judging``: a worker generates the next trial while the previous one is
judged. Real Ray workers on a local cluster; a staged quadratic evaluator whose stages
sleep (simulated generation and remote judge), and the real pipeline (hf generation on
tiny models, an LLM judge over real HTTP with latency)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState

from evomerge.config import load_run_config
from evomerge.exceptions import ConfigError, SearchError
from evomerge.run import build_space, open_run
from evomerge.search import run_search
from evomerge.testing.openai_server import FakeOpenAIServer
from evomerge.testing.search import StagedQuadraticEvaluator
from evomerge.testing.tiny import perturb_model

from .conftest import make_run, write_run_yaml

pytestmark = pytest.mark.usefixtures("ray_local")

STAGED = "evomerge.testing.search:staged_quadratic_evaluator"


def _staged_run(
    root: Path, models: Any, *, overlap: bool, options: dict[str, Any], **search: Any
) -> Path:
    data = make_run(
        models.as_dict(),
        name="overlap",
        factory=STAGED,
        options=options,
        search={"n_trials": 8, "population_size": 4, "overlap_judging": overlap, **search},
        workers={"num": 1, "cpus_per_worker": 1, "max_restarts": 1},
    )
    return write_run_yaml(root / "run.yaml", data)


def _check_values(path: Path, run_dir: Path) -> list[Any]:
    """Every complete trial's value is its own parameters' value (nothing swapped)."""
    config = load_run_config(path)
    space = build_space(config)
    evaluator = StagedQuadraticEvaluator(space)  # same default seed: the same hidden optimum
    trials = open_run(run_dir).study.study.trials
    for t in trials:
        if t.state == TrialState.COMPLETE:
            x = space.encode(space.decode(space.from_params(t.params)))
            assert t.values[0] == pytest.approx(evaluator.value(x, evaluator.target), abs=1e-12)
    return trials


def test_overlapped_workers_finish_trials_faster_and_tell_each_its_own_value(
    tiny_models: Any, tmp_path: Path
) -> None:
    """Generation 0.4 s + judging 0.4 s per trial on one worker: sequential ~0.8 s per
    trial, overlapped ~0.4 s. Catches: no overlap (one trial per worker, no threaded actor,
    the judge stage under the lock) and results told to the wrong trial."""
    options = {"sleep_s": 0.4, "judge_sleep_s": 0.4}
    rates = {}
    for overlap in (False, True):
        root = tmp_path / f"overlap_{overlap}"
        path = _staged_run(root, tiny_models, overlap=overlap, options=options)
        summary = run_search(path, run_dir=root / "rd", progress=False)
        assert summary.stopped == "done" and summary.n_complete == 8
        rates[overlap] = summary.trials_per_hour
        trials = _check_values(path, root / "rd")
        waited = [t.user_attrs["timings"].get("wait_s") for t in trials]
        assert all((w is not None) == overlap for w in waited)
        if overlap:  # a trial dispatched behind another waited for the accelerator
            assert max(w for w in waited if w is not None) > 0.2
    assert rates[True] > 1.4 * rates[False], rates


def test_failures_in_either_stage_fail_their_own_trial(tiny_models: Any, tmp_path: Path) -> None:
    """Trial 2 fails while judged, trial 3 while generated (beside trial 2's judging): each
    is told FAIL with its own error, and every other trial completes with its own value."""
    options = {
        "sleep_s": 0.2,
        "judge_sleep_s": 0.4,
        "judge_fail_trials": [2],
        "fail_trials": [3],
    }
    path = _staged_run(tmp_path, tiny_models, overlap=True, options=options, retries=0)
    summary = run_search(path, run_dir=tmp_path / "rd", progress=False)
    assert (summary.n_complete, summary.n_failed) == (6, 2)
    trials = _check_values(path, tmp_path / "rd")
    errors = {t.number: t.user_attrs.get("error") for t in trials if t.state == TrialState.FAIL}
    assert errors == {
        2: "RuntimeError: injected judge failure (trial 2)",
        3: "RuntimeError: injected failure (trial 3)",
    }


def test_a_worker_that_dies_with_two_trials_reruns_both(tiny_models: Any, tmp_path: Path) -> None:
    """The worker dies generating trial 3 while trial 2 is being judged: both are retried on
    the one restarted worker (max_restarts 1: replaced once, not once per lost trial)."""
    options = {"sleep_s": 0.2, "judge_sleep_s": 0.8, "crash_once_trials": [3]}
    path = _staged_run(tmp_path, tiny_models, overlap=True, options=options)
    summary = run_search(path, run_dir=tmp_path / "rd", progress=False)
    assert (summary.stopped, summary.n_complete, summary.n_failed) == ("done", 8, 0)
    trials = _check_values(path, tmp_path / "rd")
    retried = {t.number: t.user_attrs for t in trials if t.user_attrs.get("attempts", 1) > 1}
    assert sorted(retried) == [2, 3]
    for attrs in retried.values():
        assert attrs["attempts"] == 2 and "died" in attrs["errors"][0]
    assert len(trials) == 8  # re-run in place: no trial asked twice


def test_an_evaluator_without_stages_is_refused_at_start(tiny_models: Any, tmp_path: Path) -> None:
    data = make_run(
        tiny_models.as_dict(),
        search={"overlap_judging": True},
        workers={"num": 1, "start_timeout_s": 120},
    )
    path = write_run_yaml(tmp_path / "run.yaml", data)
    with pytest.raises(SearchError, match=r"search\.overlap_judging: evaluator .*quadratic"):
        run_search(path, run_dir=tmp_path / "rd", progress=False)


def test_overlap_options_that_cannot_be_honoured_are_refused_with_the_field(
    tiny_models: Any, tmp_path: Path
) -> None:
    """Config time: a CMA-ES generation smaller than the trials in flight, and judging that
    needs the model (perplexity only); both errors at once, each naming the field."""
    data = make_run(
        tiny_models.as_dict(),
        search={"overlap_judging": True, "population_size": 2},
        workers={"num": 2},
    )
    del data["evaluator"]
    data["generation"] = {"prompts": None, "params": {"max_new_tokens": 4}}
    data["judging"] = {"judges": {"ppl": {"type": "perplexity", "options": {"texts": ["hi"]}}}}
    path = write_run_yaml(tmp_path / "run.yaml", data)
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    text = str(err.value)
    assert str(path) in text
    assert "search.overlap_judging: every judge (ppl) scores the candidate model" in text
    assert "more than search.population_size 2" in text
    data["search"]["overlap_judging"] = False  # the same run without overlap is valid
    load_run_config(write_run_yaml(tmp_path / "ok.yaml", data))


JUDGE_YAML = """\
system_prompt: You are a test judge.
user_template: "Question: {question}\\nAnswer: [{answer}]\\nScore 1-7 on the last line."
scale: {min: 1, max: 7}
parsing: last_line_integer
max_tokens: 8
"""


def _score_of(answer: str) -> int:
    return sum(map(ord, answer)) % 7 + 1


def _reply(request: dict[str, Any]) -> str:
    text = request["messages"][-1]["content"]
    answer = text[text.index("Answer: [") + 9 : text.rindex("]\nScore")]
    return str(_score_of(answer))


@pytest.fixture(scope="module")
def far_models(tiny_models: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two sources far from the base (noise as large as the weights): merges with other
    weights answer differently, so each trial's answers are its own."""
    root = tmp_path_factory.mktemp("far_models")
    return {
        "base": tiny_models.base,
        "ft_a": perturb_model(tiny_models.base, root / "ft_a", seed=21, scale=1.0),
        "ft_b": perturb_model(tiny_models.base, root / "ft_b", seed=22, scale=1.0),
    }


def test_the_pipeline_judges_one_trial_while_it_generates_the_next(
    far_models: dict[str, Path], tmp_path: Path
) -> None:
    """Real hf generation and an LLM judge over HTTP (0.3 s per request). Each trial's
    judge mean is computed from its own answers; with overlap two trials' requests are at
    the server at once (sequential: at most one trial's two)."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"question": q}) + "\n" for q in ("hello there", "who are you?")),
        encoding="utf-8",
    )
    (tmp_path / "judges").mkdir()
    (tmp_path / "judges" / "stub.yaml").write_text(JUDGE_YAML, encoding="utf-8")
    with FakeOpenAIServer(reply=_reply, latency=0.3) as server:
        data = make_run(
            far_models,
            name="judged",
            search={"n_trials": 6, "population_size": 4, "overlap_judging": True},
            workers={"num": 1, "cpus_per_worker": 1},
        )
        del data["evaluator"]
        data["generation"] = {
            "prompts": str(prompts),
            "template": "{question}",
            "params": {"max_new_tokens": 8},
            "dtype": "float32",
        }
        data["judging"] = {
            "cache": False,
            "judges_dirs": [str(tmp_path / "judges")],
            "judges": {"stub": {"type": "stub", "endpoint": server.url, "model": "m"}},
        }
        path = write_run_yaml(tmp_path / "run.yaml", data)
        summary = run_search(path, run_dir=tmp_path / "rd", progress=False)
        assert summary.n_complete == 6
        assert server.max_in_flight > 2
    trials = open_run(tmp_path / "rd").study.study.trials
    means = set()
    for t in trials:
        answers = [s["answer"] for s in t.user_attrs["samples"]]
        assert len(answers) == 2
        mean = sum(_score_of(a) for a in answers) / 2
        assert t.user_attrs["scores"]["stub"] == pytest.approx(mean)
        means.add(mean)
    assert len(means) > 1, [t.user_attrs["samples"] for t in trials]  # a swap would show
