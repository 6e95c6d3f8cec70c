"""A run directory written as the driver writes it, without Ray: run.yaml and a study."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState, create_trial

from evomerge.config import RunConfig
from evomerge.run import attrs, build_space, make_storage, open_study, write_run_yaml
from evomerge.search import distributions

optuna.logging.set_verbosity(optuna.logging.WARNING)


def write_run(
    run_dir: Path,
    models: Any,
    directions: Sequence[str],
    trials: Sequence[tuple[TrialState, list[float] | None]],
    *,
    space: str | dict[str, Any] = "linear_layerwise",
) -> Path:
    """``run_dir`` with a run.yaml and a study holding ``trials`` (state, values), each with
    its own genome (trial i at the i-th point of a fixed random sequence) and recipe."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config = RunConfig.model_validate(
        {
            "name": "views",
            "models": {
                "base": str(models.base),
                "sources": [str(models.ft_a), str(models.ft_b)],
                "names": ["a", "b"],
            },
            "space": space,
            "space_overrides": {"layer_granularity": 2},
            "search": {"sampler": "tpe"},
            "evaluator": {"factory": "evomerge.testing.search:quadratic_evaluator"},
        }
    )
    write_run_yaml(run_dir, config)
    bound = build_space(config)
    study, _ = open_study(
        storage=make_storage(run_dir, "journal"),
        study_name="views",
        sampler=optuna.samplers.RandomSampler(seed=0),
        directions=list(directions),
    )
    study.set_user_attr(attrs.OBJECTIVE_NAMES, [f"obj{i}" for i in range(len(directions))])
    study.set_user_attr(attrs.SPACE, bound.spec.name)
    rng = np.random.default_rng(0)
    for i, (state, values) in enumerate(trials):
        x = bound.lower + (bound.upper - bound.lower) * rng.uniform(0.1, 0.9, size=bound.dim)
        user_attrs: dict[str, Any] = {attrs.RECIPE: bound.decode(x).to_mergekit_dict()}
        if state == TrialState.COMPLETE:
            user_attrs[attrs.SCORES] = {"judge": float(i)}
            user_attrs[attrs.SAMPLES] = [{"question": "q?", "answer": f"answer of trial {i}"}]
        elif state == TrialState.FAIL:
            user_attrs[attrs.ERROR] = f"boom {i}" + "!" * 200
        study.add_trial(
            create_trial(
                state=state,
                params=bound.to_params(x),
                distributions=distributions(bound),
                values=values,
                user_attrs=user_attrs,
            )
        )
    return run_dir


@pytest.fixture
def make_run_dir(tiny_models: Any, tmp_path: Path) -> Callable[..., Path]:
    """``make_run_dir(directions, trials, name="rd", **kw) -> run_dir`` (see :func:`write_run`)."""

    def make(directions: Sequence[str], trials: Sequence[Any], name: str = "rd", **kw: Any) -> Path:
        return write_run(tmp_path / name, tiny_models, directions, trials, **kw)

    return make
