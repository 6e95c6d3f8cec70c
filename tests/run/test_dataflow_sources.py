"""A data-flow run's sources resolved from its config: models, LoRA adapters, a previous
run's trial (the hybrid), and the errors naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState

from evomerge.config import RunConfig
from evomerge.exceptions import ConfigError
from evomerge.run import open_run
from evomerge.run._dataflow import build_dataflow_space, resolve_path_sources


def _config(tiny_models: Any, sources: list[Any] | None = None) -> RunConfig:
    space: dict[str, Any] = {"type": "dataflow"}
    if sources is not None:
        space["sources"] = sources
    return RunConfig.model_validate(
        {
            "name": "dfs",
            "models": {
                "base": str(tiny_models.base),
                "sources": [str(tiny_models.ft_a), str(tiny_models.lora_a)],
                "names": ["a", "lo"],
            },
            "space": space,
            "merge": {"seed": 7},
            "evaluator": {"factory": "evomerge.testing.search:quadratic_evaluator"},
        }
    )


def test_default_sources_are_the_run_models(tiny_models: Any) -> None:
    got = resolve_path_sources(_config(tiny_models), _config(tiny_models).space_spec())  # type: ignore[arg-type]
    assert list(got) == ["a", "lo"]
    assert got["a"].model == str(tiny_models.ft_a)
    assert got["lo"].model == f"{tiny_models.base}+{tiny_models.lora_a}"  # mergekit's LoRA form


def test_a_previous_runs_trial_is_a_recipe_source(tiny_models: Any, make_run_dir: Any) -> None:
    rd = make_run_dir(
        ["maximize"],
        [(TrialState.COMPLETE, [1.0]), (TrialState.COMPLETE, [3.0]), (TrialState.COMPLETE, [2.0])],
    )
    prev = open_run(rd)
    cfg = _config(
        tiny_models,
        ["base", {"name": "ps", "run": str(rd)}, {"name": "ps1", "run": str(rd), "trial": 0}],
    )
    got = resolve_path_sources(cfg, cfg.space_spec())  # type: ignore[arg-type]
    assert got["base"].model == str(tiny_models.base)
    assert got["ps"].recipe == prev.study.recipe(prev.study.best())  # trial 1, the best
    assert got["ps1"].recipe == prev.study.recipe(prev.study.pick(0))
    assert got["ps"].seed == prev.config.merge.seed != cfg.merge.seed


def test_a_bad_run_source_names_the_field(
    tiny_models: Any, make_run_dir: Any, tmp_path: Path
) -> None:
    rd = make_run_dir(["maximize"], [(TrialState.FAIL, None)])
    cfg = _config(tiny_models, ["a", {"name": "ps", "run": str(rd)}])
    with pytest.raises(ConfigError, match=r"space\.sources\.1\.run: .*no complete trial"):
        resolve_path_sources(cfg, cfg.space_spec())  # type: ignore[arg-type]
    cfg = _config(tiny_models, [{"name": "ps", "run": str(tmp_path / "nowhere")}])
    with pytest.raises(ConfigError, match=r"space\.sources\.0\.run"):
        resolve_path_sources(cfg, cfg.space_spec())  # type: ignore[arg-type]


def test_the_dataflow_space_opens_and_checks_every_source(tiny_models: Any) -> None:
    """No ``embedding`` given: the first source's layout is the one the others must match."""
    cfg = RunConfig.model_validate(
        {
            "name": "dfs",
            "models": {
                "base": str(tiny_models.base),
                "sources": [str(tiny_models.ft_a), str(tiny_models.ft_b)],
                "names": ["a", "b"],
            },
            "space": {"type": "dataflow"},
            "evaluator": {"factory": "evomerge.testing.search:quadratic_evaluator"},
        }
    )
    space = build_dataflow_space(cfg, cfg.space_spec())  # type: ignore[arg-type]
    assert list(space.sources) == ["a", "b"] and space.num_layers == {"a": 4, "b": 4}
    assert space.sources["b"].model == str(tiny_models.ft_b)
