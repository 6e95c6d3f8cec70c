"""A run directory written as the driver writes it, without Ray: run.yaml and a study."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState, create_trial

from evomerge.config import RunConfig
from evomerge.run import attrs, build_space, make_storage, open_study, write_run_yaml
from evomerge.search import distributions
from evomerge.testing.tiny import build_tiny_model, perturb_model

optuna.logging.set_verbosity(optuna.logging.WARNING)


def write_run(
    run_dir: Path,
    models: Any,
    directions: Sequence[str],
    trials: Sequence[tuple[TrialState, list[float] | None]],
    *,
    space: str | dict[str, Any] = "linear_layerwise",
    named: bool = True,
    trial_attrs: dict[int, dict[str, Any]] | None = None,
) -> Path:
    """``run_dir`` with a run.yaml and a study holding ``trials`` (state, values), each with
    its own genome (trial i at the i-th point of a fixed random sequence) and recipe.
    ``named``: store the objective names; ``trial_attrs``: more attributes per trial."""
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
    if named:
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
        user_attrs.update((trial_attrs or {}).get(i, {}))
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


@pytest.fixture(scope="package")
def run_models(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A 4-layer tiny base and two dense fine-tunes (what a run.yaml here names)."""
    root = tmp_path_factory.mktemp("run_models")
    base = build_tiny_model(root / "base", seed=0, num_layers=4)
    return SimpleNamespace(
        base=base,
        ft_a=perturb_model(base, root / "ft_a", seed=1),
        ft_b=perturb_model(base, root / "ft_b", seed=2),
    )


@pytest.fixture
def make_run_dir(run_models: Any, tmp_path: Path) -> Callable[..., Path]:
    """``make_run_dir(directions, trials, name="rd", **kw) -> run_dir`` (see :func:`write_run`)."""

    def make(directions: Sequence[str], trials: Sequence[Any], name: str = "rd", **kw: Any) -> Path:
        return write_run(tmp_path / name, run_models, directions, trials, **kw)

    return make
