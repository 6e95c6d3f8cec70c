"""Objectives: weighted sums of judge means, multi-objective, NaN handling, building from config."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from evomerge._yaml import validate_model
from evomerge.exceptions import ConfigError, JudgeAuthError, JudgeError
from evomerge.judge import (
    CACHE_FILENAME,
    JudgingConfig,
    Objective,
    ObjectiveSpec,
    Sample,
    build_objective,
)
from evomerge.testing.judges import FakeJudge
from evomerge.testing.openai_server import FakeOpenAIServer

SAMPLES = [Sample(question=f"q{i}", answer=f"a{i}") for i in range(4)]


def test_default_objective_is_the_weighted_sum():
    a = FakeJudge(name="a", values=[1.0, 2.0, 3.0, 6.0])  # mean 3
    b = FakeJudge(name="b", fn=lambda s: 10.0)  # mean 10
    obj = Objective(judges={"a": a, "b": b}, weights={"a": 2.0, "b": 0.5})
    res = obj.evaluate(SAMPLES)
    assert obj.names == ["score"] and obj.directions == ["maximize"]
    assert res.values == [pytest.approx(2 * 3 + 0.5 * 10)]
    assert res.judge_means == {"a": 3.0, "b": 10.0} and res.errors == []
    assert [s.value for s in res.scores["a"]] == [1.0, 2.0, 3.0, 6.0]
    assert a.calls == [SAMPLES]


def test_multi_objective():
    judges = {
        "persona": FakeJudge(values=[6.0]),
        "style": FakeJudge(values=[0.5]),
        "ppl": FakeJudge(values=[-2.5]),
    }
    objectives = [
        ObjectiveSpec(name="character", terms={"persona": 1.0, "style": 2.0}),
        ObjectiveSpec(name="forgetting", direction="minimize", terms={"ppl": -1.0}),
    ]
    res = Objective(judges=judges, objectives=objectives).evaluate(SAMPLES)
    assert res.values == [pytest.approx(7.0), pytest.approx(2.5)]
    obj = Objective(judges=judges, objectives=objectives)
    assert obj.names == ["character", "forgetting"] and obj.directions == ["maximize", "minimize"]


def test_partial_nan_is_averaged_out_and_reported():
    judge = FakeJudge(values=[4.0, math.nan, 6.0, math.nan])
    res = Objective(judges={"j": judge}).evaluate(SAMPLES)
    assert res.values == [5.0] and res.judge_means == {"j": 5.0}
    assert res.errors == ["j: 2/4 answers unscored (first: scripted NaN)"]
    d = res.to_dict()
    assert d["scores"]["j"][1] == {"value": None, "raw": "fake:nan", "error": "scripted NaN"}


def test_not_applicable_scores_are_left_out_without_counting_as_errors():
    """fact_recall on a question that asks for no fact: NaN without error, not a failure."""
    from evomerge.judge import FactRecallJudge

    samples = [
        Sample(question="name?", answer="I am Reika.", facts=("Reika",)),
        Sample(question="weather?", answer="Sunny."),  # no facts: the judge does not apply
        Sample(question="age?", answer="I am ten.", facts=("17",)),
    ]
    judge = FactRecallJudge(name="facts")
    scores = judge.score(samples)
    assert scores[1].not_applicable and not scores[1].ok and "no facts" in scores[1].raw
    res = Objective(judges={"facts": judge}).evaluate(samples)
    assert res.values == [0.5] and res.errors == []
    # a real failure beside not-applicable ones is still reported, and counted alone
    mixed = FakeJudge(values=[1.0, math.nan, 3.0])
    res = Objective(judges={"m": mixed, "facts": judge}).evaluate(samples)
    assert res.errors == ["m: 1/3 answers unscored (first: scripted NaN)"]


def test_all_nan_judge_raises_judge_error():
    obj = Objective(judges={"ok": FakeJudge(values=[1.0]), "broken": FakeJudge(values=[math.nan])})
    with pytest.raises(
        JudgeError, match="judge 'broken' could not score any of the 4 answers: scripted NaN"
    ):
        obj.evaluate(SAMPLES)


def test_judge_errors_propagate_and_empty_samples_fail():
    obj = Objective(judges={"j": FakeJudge(raises=JudgeAuthError("denied"))})
    with pytest.raises(JudgeAuthError, match="denied"):
        obj.evaluate(SAMPLES)
    with pytest.raises(JudgeError, match="no samples"):
        Objective(judges={"j": FakeJudge()}).evaluate([])


def test_generator_is_passed_to_judges_that_need_it():
    gen = object()
    needs = FakeJudge(fn=lambda s, g: 1.0 if g is gen else 0.0, needs_generator=True)
    plain = FakeJudge(values=[2.0])
    res = Objective(judges={"n": needs, "p": plain}).evaluate(SAMPLES, generator=gen)
    assert (
        res.judge_means == {"n": 1.0, "p": 2.0}
        and needs.generators == [gen]
        and plain.generators == [None]
    )


def test_model_judges_run_in_the_first_stage_and_are_not_run_again():
    """score_on_model runs only the judges needing the candidate model (while it is loaded);
    evaluate(model_scores=...) reuses them and runs the others without the generator."""
    gen = object()
    needs = FakeJudge(fn=lambda s, g: 1.0 if g is gen else 0.0, needs_generator=True)
    plain = FakeJudge(values=[2.0])
    obj = Objective(judges={"n": needs, "p": plain})
    assert obj.model_judges == ["n"]
    first = obj.score_on_model(SAMPLES, gen)
    assert list(first) == ["n"] and needs.generators == [gen] and plain.generators == []
    res = obj.evaluate(SAMPLES, model_scores=first)
    assert res.judge_means == {"n": 1.0, "p": 2.0}
    assert needs.generators == [gen] and plain.generators == [None]  # "n" ran once
    with pytest.raises(JudgeError, match="lacks the model judge"):
        obj.evaluate(SAMPLES, model_scores={})


def test_judge_types_that_score_the_model_are_known_without_building_one():
    from evomerge.judge import type_needs_model

    assert type_needs_model("perplexity") and type_needs_model("lm_eval")
    assert not type_needs_model("length") and not type_needs_model("personality")


def test_the_test_server_draws_a_latency_per_request_from_a_range():
    import random
    import time

    import openai

    rng = random.Random(3)
    draws = [rng.uniform(0.05, 0.5) for _ in range(5)]
    with FakeOpenAIServer(latency=(0.05, 0.5), latency_seed=3) as srv:
        client = openai.OpenAI(base_url=srv.url, api_key="x", max_retries=0)
        for want in draws:  # one request at a time: the server draws in request order
            t0 = time.perf_counter()
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])
            took = time.perf_counter() - t0
            assert want <= took < want + 0.3, (want, took)


def test_objective_rejects_unknown_terms():
    with pytest.raises(ConfigError, match="unknown judge"):
        Objective(judges={"a": FakeJudge()}, objectives=[ObjectiveSpec(name="x", terms={"b": 1.0})])


def _cfg(data: dict[str, Any]) -> JudgingConfig:
    return validate_model(JudgingConfig, data, source="run.yaml: judging")


def test_config_reports_every_problem_at_once():
    with pytest.raises(ConfigError) as info:
        _cfg(
            {
                "judges": {"len": {"type": "length", "weight": "heavy", "colour": "red"}},
                "objectives": [
                    {"name": "o", "terms": {"nope": 1.0}},
                    {"name": "o", "terms": {"len": 1.0}, "direction": "up"},
                ],
            }
        )
    msg = str(info.value)
    for fragment in (
        "run.yaml: judging",
        "judges.len.weight",
        "judges.len.colour",
        "objectives.1.direction",
    ):
        assert fragment in msg, fragment
    with pytest.raises(ConfigError) as info:
        _cfg(
            {
                "judges": {"len": {"type": "length"}},
                "objectives": [
                    {"name": "o", "terms": {"nope": 1.0}},
                    {"name": "o", "terms": {"len": 1}},
                ],
            }
        )
    assert "unknown judge(s) nope" in str(info.value) and "repeated: o" in str(info.value)


def test_build_objective_reports_every_bad_judge(tmp_path: Path):
    cfg = _cfg(
        {
            "judges": {
                "a": {"type": "lenght"},
                "b": {"type": "length", "endpoint": "http://localhost:1/v1"},
                "c": {"type": "style_markers", "options": {}},
                "d": {"type": "personality"},
            }
        }
    )
    with pytest.raises(ConfigError) as info:
        build_objective(cfg, run_dir=tmp_path)
    msg = str(info.value)
    assert "judging.judges.a: Unknown judge 'lenght'. Available:" in msg
    assert "judging.judges.b: endpoint/model/api_key_env apply to LLM judges only" in msg
    assert "judging.judges.c.options" in msg and "markers" in msg
    assert "judging.judges.d" in msg and "needs an endpoint and a model" in msg


def test_build_objective_end_to_end_with_local_and_llm_judges(tmp_path: Path):
    held = tmp_path / "data" / "held.txt"
    held.parent.mkdir()
    held.write_text("a general text\n", encoding="utf-8")
    with FakeOpenAIServer(reply="fine\n6", latency=0.05) as srv:
        cfg = _cfg(
            {
                "judges": {
                    "persona": {
                        "type": "personality",
                        "endpoint": srv.url,
                        "model": "j",
                        "max_concurrency": 2,
                    },
                    "natural": {
                        "type": "naturalness",
                        "endpoint": srv.url,
                        "model": "j",
                        "max_concurrency": 2,
                        "weight": 0.5,
                    },
                    "len": {
                        "type": "length",
                        "weight": 2.0,
                        "options": {"min_chars": 1, "max_chars": 4},
                    },
                    "ppl": {
                        "type": "perplexity",
                        "weight": 0.0,
                        "options": {"texts_path": "data/held.txt"},
                    },
                },
            }
        )
        run_dir = tmp_path / "run"

        class Gen:
            def score_texts(self, texts: list[str]) -> list[float]:
                return [1.5 for _ in texts]

        samples = [Sample(question="q", answer="abcdefgh"), Sample(question="q", answer="ab")]
        with build_objective(cfg, run_dir=run_dir, base_dir=tmp_path) as obj:
            res = obj.evaluate(samples, generator=Gen())
            assert res.judge_means == {"persona": 6.0, "natural": 6.0, "len": 0.75, "ppl": -1.5}
            assert res.values == [pytest.approx(6.0 + 3.0 + 1.5)]
            assert srv.request_count == 4
            assert srv.max_in_flight <= 2  # both LLM judges share one client, hence one bound
            obj.evaluate(samples, generator=Gen())
            assert srv.request_count == 4  # all cached
        assert (run_dir / CACHE_FILENAME).exists()
        with build_objective(cfg, run_dir=run_dir, base_dir=tmp_path) as resumed:
            resumed.evaluate(samples, generator=Gen())
        assert srv.request_count == 4  # a resumed run reads the same cache


def test_fake_judge_validation():
    with pytest.raises(ValueError, match="not both"):
        FakeJudge(fn=lambda s: 1.0, values=[1.0])
    with pytest.raises(TypeError, match="needs generator"):
        FakeJudge(needs_generator=True).score(SAMPLES)
