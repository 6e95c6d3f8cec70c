"""The ``lm_eval`` judge against the harness itself: ``lm_eval.simple_evaluate`` on the same
weights saved to disk is the oracle, for both bundled tasks, with and without few-shot
examples and a chat template; the judge runs on the live model, never writing it."""

from __future__ import annotations

import json
import math
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from evomerge.exceptions import JudgeError
from evomerge.generate import HFGenerator
from evomerge.judge import JudgeContext, Sample, build_judge
from evomerge.judge.harness import LMEvalJudge, bundled_tasks_dir
from evomerge.testing.generation import FakeGenerator

lm_eval = pytest.importorskip("lm_eval")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TASKS = ("persona_facts_mc", "persona_register")


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


@pytest.fixture(scope="module")
def generator(lm_eval_models: dict[str, Path]) -> HFGenerator:
    return HFGenerator.from_pretrained(lm_eval_models["base"], device="cpu", dtype="float32")


def _oracle(path: Path, task: str, **kw: Any) -> dict[str, float]:
    """The harness's own run on a checkpoint folder: every ``metric,filter`` of ``task``."""
    from lm_eval.tasks import TaskManager

    out = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(path), "dtype": "float32", "device": "cpu"},
        tasks=[task],
        task_manager=TaskManager(include_path=str(bundled_tasks_dir()), include_defaults=False),
        batch_size=4,
        bootstrap_iters=0,
        log_samples=False,
        **kw,
    )
    row = out["results"][task]
    return {k: float(v) for k, v in row.items() if "," in k and "_stderr" not in k}


def _judge(task: str, **options: Any) -> LMEvalJudge:
    judge = build_judge("lm_eval", name="h", options={"tasks": [task], "batch_size": 4, **options})
    assert isinstance(judge, LMEvalJudge)
    return judge


def _table(judge: LMEvalJudge, generator: Any) -> dict[str, float]:
    score = judge.score([Sample(question="q", answer="a")], generator=generator)[0]
    assert score.ok, score.error
    return json.loads(score.raw)["results"][judge.options.tasks[0]]


CASES = [
    ("persona_facts_mc", {"limit": 10, "num_fewshot": 2}),
    ("persona_facts_mc", {"limit": 8, "apply_chat_template": True}),
    ("persona_register", {"limit": 6, "num_fewshot": 1, "gen_kwargs": {"max_gen_toks": 24}}),
]


@pytest.mark.parametrize(("task", "options"), CASES, ids=["mc-fewshot", "mc-chat", "translation"])
def test_scores_equal_the_harness_on_the_saved_model(
    lm_eval_models: dict[str, Path], generator: HFGenerator, task: str, options: dict[str, Any]
) -> None:
    judge = _judge(task, **options)
    generator.load_weights(_weights(lm_eval_models["merged"]).items())
    live = _table(judge, generator)
    oracle = _oracle(lm_eval_models["merged"], task, **options)
    assert set(live) == set(oracle)
    for key, value in oracle.items():
        assert live[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    first = judge.metrics[task]
    value = judge.score([Sample(question="", answer="")], generator=generator)[0].value
    assert value == pytest.approx(live[first])


def test_every_trial_sees_its_own_weights_and_the_same_prompts(
    lm_eval_models: dict[str, Path], generator: HFGenerator
) -> None:
    """Tasks are built once; each trial re-seeds the few-shot sampler (so a later trial
    scores exactly as a fresh harness run would) and reads the weights loaded last."""
    # chrF is continuous: different weights give different scores (accuracy on a few
    # documents of random tiny models often ties)
    opts: dict[str, Any] = {"limit": 4, "num_fewshot": 2, "gen_kwargs": {"max_gen_toks": 16}}
    judge = _judge("persona_register", **opts)
    built = dict(judge.tasks.tasks)
    scores = {}
    for name in ("base", "ft", "merged", "base"):
        generator.load_weights(_weights(lm_eval_models[name]).items())
        scores.setdefault(name, []).append(_table(judge, generator))
    assert judge.tasks.tasks == built  # the same task objects every trial
    assert scores["base"][0] == scores["base"][1]
    assert scores["ft"][0] != scores["base"][0]  # different weights, different scores
    assert scores["ft"][0] == pytest.approx(
        _oracle(lm_eval_models["ft"], "persona_register", **opts)
    )


def test_tasks_are_built_once(
    monkeypatch: pytest.MonkeyPatch, lm_eval_models: dict[str, Path], generator: HFGenerator
) -> None:
    import evomerge.judge.harness as harness

    calls: list[str] = []
    real = harness.local_files

    def counting(**kw: Any) -> Any:
        calls.append(str(kw.get("config_source")))
        return real(**kw)

    monkeypatch.setattr(harness, "local_files", counting)
    judge = _judge("persona_facts_mc", limit=4)
    for _ in range(3):
        _table(judge, generator)
    assert len(calls) == 1 and calls[0].endswith("persona_facts_mc.yaml")


def test_requests_are_built_once_and_their_responses_cleared(
    lm_eval_models: dict[str, Path], generator: HFGenerator
) -> None:
    """With a few-shot seed, later trials reuse the first trial's request objects (responses
    cleared: a stale response would score the first trial's answers again, which the test
    above catches); without one, every trial builds (and samples) its own."""
    opts: dict[str, Any] = {"limit": 3, "num_fewshot": 2}
    seeded = _judge("persona_facts_mc", **opts)
    task = seeded.tasks.tasks["persona_facts_mc"]
    _table(seeded, generator)
    first = list(task.instances)
    _table(seeded, generator)
    assert [id(i) for i in task.instances] == [id(i) for i in first]
    assert all(len(i.resps) == 1 for i in task.instances)  # this trial's response only
    unseeded = _judge("persona_facts_mc", fewshot_seed=None, **opts)
    task = unseeded.tasks.tasks["persona_facts_mc"]
    _table(unseeded, generator)
    first = list(task.instances)
    _table(unseeded, generator)
    assert not {id(i) for i in task.instances} & {id(i) for i in first}


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Records (and refuses) every attempt to reach a host other than this machine."""
    attempts: list[str] = []
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else str(address)
        if host not in ("127.0.0.1", "::1", "localhost") and self.family != socket.AF_UNIX:
            attempts.append(f"connect {address}")
            raise OSError("network disabled in this test")
        return real_connect(self, address)

    def getaddrinfo(host: Any, *args: Any, **kw: Any) -> Any:
        if host not in ("127.0.0.1", "::1", "localhost", None):
            attempts.append(f"resolve {host}")
            raise OSError("network disabled in this test")
        return real_getaddrinfo(host, *args, **kw)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield attempts


def test_offline_and_no_process_wide_switches(
    no_network: list[str], lm_eval_models: dict[str, Path], generator: HFGenerator, tmp_path: Path
) -> None:
    env = dict(os.environ)
    before = set(os.listdir(tmp_path))
    judge = _judge("persona_register", limit=2, gen_kwargs={"max_gen_toks": 4})
    generator.load_weights(_weights(lm_eval_models["merged"]).items())
    assert math.isfinite(
        judge.score([Sample(question="", answer="")], generator=generator)[0].value
    )
    assert no_network == []
    assert dict(os.environ) == env  # no HF_*_OFFLINE or other switch left behind
    assert set(os.listdir(tmp_path)) == before


def test_backends_without_a_live_model_are_refused() -> None:
    judge = _judge("persona_facts_mc", limit=2)
    with pytest.raises(JudgeError, match=r"live transformers model.*backend: hf"):
        judge.score([Sample(question="", answer="")], generator=FakeGenerator())
    with pytest.raises(JudgeError, match="needs the candidate model"):
        judge.score([Sample(question="", answer="")])


def test_registered_as_a_local_answer_free_judge() -> None:
    from evomerge.judge import available_judges, needs_answers, needs_generator

    assert available_judges()["lm_eval"] == "local"
    judge = LMEvalJudge.from_options(
        name="x", options={"tasks": ["general_chat_mc"]}, context=JudgeContext()
    )
    assert needs_generator(judge) and not needs_answers(judge)
    assert judge.metrics == {"general_chat_mc": "acc,none"}
