"""The lm_eval judge inside a search worker's evaluator: merge in memory, score the live
model, generate nothing (no prompt set needed when no judge scores answers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from evomerge.config import RunConfig
from evomerge.exceptions import ConfigError
from evomerge.judge import Sample
from evomerge.run import build_space
from evomerge.search._pipeline import build_pipeline_evaluator

pytest.importorskip("lm_eval")


def _config(models: dict[str, Path], judges: dict[str, Any]) -> RunConfig:
    return RunConfig.model_validate(
        {
            "name": "lm-eval-pipe",
            "models": {"base": str(models["base"]), "sources": [str(models["ft"])]},
            "space": "task_arithmetic_with_base",
            "space_overrides": {"layer_granularity": 2},
            "generation": {"dtype": "float32"},
            "judging": {"judges": judges},
        }
    )


def test_an_answer_free_run_merges_and_scores_without_generating(
    lm_eval_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    judges = {"facts": {"type": "lm_eval", "options": {"tasks": ["persona_facts_mc"], "limit": 6}}}
    cfg = _config(lm_eval_models, judges)
    ev = build_pipeline_evaluator(cfg, device="cpu", worker_index=0, run_dir=tmp_path)

    def no_generation(*_: Any, **__: Any) -> list[str]:
        raise AssertionError("nothing should be generated")

    monkeypatch.setattr(ev.generator, "generate", no_generation)
    space = build_space(cfg)
    scores = []
    for x in (space.x0(), space.x0() * 0.0 + 1.0):
        result = ev.evaluate(0, space.decode(x))
        assert result.error is None and result.samples == []
        # the value is the harness's metric on exactly the weights the worker merged
        again = ev.objective.judges["facts"].score(
            [Sample(question="", answer="")], generator=ev.generator
        )
        assert result.values == [again[0].value] and result.scores == {"facts": again[0].value}
        scores.append(result.values)
    assert scores[0] != scores[1]


def test_judges_that_score_answers_still_need_prompts(
    lm_eval_models: dict[str, Path], tmp_path: Path
) -> None:
    judges = {
        "facts": {"type": "lm_eval", "options": {"tasks": ["persona_facts_mc"], "limit": 2}},
        "len": {"type": "length", "options": {"min_chars": 1, "max_chars": 50}},
    }
    cfg = _config(lm_eval_models, judges)
    with pytest.raises(
        ConfigError, match=r"generation.prompts: judge\(s\) len score generated answers"
    ):
        build_pipeline_evaluator(cfg, device="cpu", worker_index=0, run_dir=tmp_path)
