"""What ``evomerge status`` prints and what the exported model card says, line by line."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
from optuna.trial import TrialState

from evomerge.merge import LayerPath, PathSlot, PathSource
from evomerge.run import (
    attrs,
    compact_setting,
    format_status,
    model_card,
    open_run,
    path_card,
    study_status,
)

C, F, R, W = TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ([0.1, 0.1, 0.2, 0.2, 0.1], "[0.1 0.2 0.1]"),  # per-layer lists as their distinct runs
        ([1, 1, 1], "[1]"),
        (json.loads("[0.25, 0.25, 0.5]"), "[0.25 0.5]"),  # equal values, distinct objects
        ({"x": 1}, "{'x': 1}"),
        (
            [{"filter": "mlp", "value": [1.0, 1.0, 2.0]}, {"value": 0.5}],
            "{mlp: [1 2]; *: 0.5}",
        ),
        (0.123456, "0.1235"),
        (math.nan, "nan"),
        (True, "True"),
        ([], "[]"),
    ],
)
def test_compact_setting(value: object, shown: str) -> None:
    assert compact_setting(value) == shown


def test_status_counts_best_recipe_and_failures(make_run_dir: Callable[..., Path]) -> None:
    trials = [(C, [0.5]), (F, None), (C, [0.75]), (R, None)] + [(F, None)] * 6
    run_dir = make_run_dir(["maximize"], trials)
    view = open_run(run_dir).study
    view.study.set_user_attr(attrs.N_TARGET, 40)
    info = study_status(run_dir)
    json.dumps(info)
    assert (info["n_complete"], info["n_failed"], info["n_running"]) == (2, 7, 1)
    assert (info["n_waiting"], info["n_pruned"], info["n_interrupted"]) == (0, 0, 0)
    assert info["n_target"] == 40 and info["sampler"] == "tpe" and "pareto" not in info
    assert info["best"]["trial"] == 2 and info["best"]["values"] == [0.75]
    assert info["best"]["scores"] == {"judge": 2.0}
    assert [e["trial"] for e in info["errors"]] == [5, 6, 7, 8, 9]  # the last five failures
    lines = format_status(info).splitlines()
    assert lines[0] == f"run views ({run_dir}), sampler tpe"
    assert lines[1] == (
        "  trials: 2 complete, 7 failed, 1 running, 0 waiting, 0 pruned, 0 interrupted; target 40"
    )
    assert lines[2] == "  objectives: obj0 (maximize)"
    assert lines[3] == "best: trial 2: obj0=0.75"
    assert lines[4] == "  judges: judge=2"
    assert lines[5] == "  method: linear   base: -"
    assert lines[6].endswith("/ft_a: weight=" + compact_setting(_weights(view, 2, 0)))
    assert lines[8] == "  global: normalize=True"
    assert lines[9] == "recent failures:"
    assert lines[10] == "  trial 5: " + ("boom 5" + "!" * 200)[:160]  # errors cut to 160 chars
    assert len(lines) == 15


def _weights(view: object, trial: int, source: int) -> list[float]:
    t = view.study.trials[trial]  # type: ignore[attr-defined]
    return t.user_attrs[attrs.RECIPE]["models"][source]["parameters"]["weight"]


def test_status_before_any_complete_trial_and_with_a_front(
    make_run_dir: Callable[..., Path],
) -> None:
    empty = make_run_dir(["maximize"], [(R, None), (W, None)], name="empty")
    info = study_status(empty)
    assert info["best"] is None and (info["n_running"], info["n_waiting"]) == (1, 1)
    assert "  no complete trial yet" in format_status(info).splitlines()
    front = make_run_dir(["maximize", "minimize"], [(C, [1.0, 1.0]), (C, [2.0, 3.0])], name="mo")
    text = format_status(study_status(front))
    assert "  objectives: obj0 (maximize), obj1 (minimize)" in text
    assert "pareto front (2 trial(s)):" in text
    assert text.splitlines()[-2:] == [
        f"  {1:>5}  {'2':>12}  {'3':>12}",
        f"  {0:>5}  {'1':>12}  {'1':>12}",
    ]
    none_yet = make_run_dir(["maximize", "maximize"], [(F, None)], name="mo0")
    assert study_status(none_yet)["pareto"] == []


def test_model_card_says_what_was_searched_and_how_to_rebuild_it(
    make_run_dir: Callable[..., Path],
) -> None:
    run_dir = make_run_dir(["maximize"], [(C, [0.5]), (F, None), (C, [0.75])])
    run = open_run(run_dir)
    best = run.study.best()
    recipe = run.study.recipe(best)
    card = model_card(run.config, run.study, best, recipe)
    lines = card.splitlines()
    assert lines[:5] == [
        "---",
        "library_name: transformers",
        f"base_model: {run.config.models.base}",
        "tags: [merge, mergekit, evomerge]",
        "---",
    ]
    assert "# views: trial 2" in lines
    assert (
        "A `linear` merge found by evomerge's evolutionary search (search space "
        "`linear_layerwise`, sampler `tpe`, 2 complete and 1 failed trials)."
    ) in lines
    assert "| obj0 | maximize | 0.75 |" in lines and "| judge | 2 |" in lines
    a = compact_setting(recipe.models[0].parameters["weight"])
    assert f"| `{recipe.models[0].model}` | weight = {a} |" in lines
    assert "| (all) | normalize = True |" in lines
    assert any("searched in groups of 2." in ln for ln in lines)
    assert recipe.to_mergekit_yaml().rstrip() in card
    assert "**Q:** q?" in lines and "**A:** answer of trial 2" in lines
    assert "drops coordinates at random" not in card  # linear is deterministic
    assert card.endswith("\n") and not card.endswith("\n\n")


def test_model_card_of_a_random_method_names_the_seed(make_run_dir: Callable[..., Path]) -> None:
    space = {
        "name": "dare",
        "method": "dare_ties",
        "layer_granularity": 2,
        "params": {"weight": {"low": 0.1, "high": 1.0}, "density": {"low": 0.2, "high": 1.0}},
    }
    run_dir = make_run_dir(["maximize"], [(C, [1.0])], space=space)
    run = open_run(run_dir)
    best = run.study.best()
    card = model_card(run.config, run.study, best, run.study.recipe(best))
    assert "evomerge used merge seed 0 (`evomerge merge --seed 0` gives the same weights)" in card
    assert "| `" in card and "density = " in card and "weight = " in card


def test_path_card_lists_the_path_and_the_command_that_rebuilds_it(
    make_run_dir: Callable[..., Path],
) -> None:
    run = open_run(make_run_dir(["maximize"], [(C, [0.5]), (C, [0.75])]))
    best = run.study.best()
    plain = LayerPath(
        sources={"a": PathSource(model="/m/a"), "b": PathSource(model="/m/b")},
        embedding="a",
        slots=(PathSlot(source="a", layer=0), PathSlot(source="b", layer=1, scale=0.5)),
    )
    card = path_card(run.config, run.study, best, plain)
    lines = card.splitlines()
    assert "# views: trial 1" in lines and "| obj0 | maximize | 0.75 |" in lines
    assert "2 decoder layers taken from `a`, `b`" in card
    assert "| 0 | a | 0 | 1 |" in lines and "| 1 | b | 1 | 0.5 |" in lines
    assert "| a | /m/a |" in lines and "| b | /m/b |" in lines
    assert "`mergekit-yaml mergekit.yaml OUT_DIR` rebuilds these weights" in card
    assert "mergekit-multi" not in card  # only models: one passthrough merge
    hybrid = plain.model_copy(
        update={"sources": {**plain.sources, "b": PathSource(recipe=run.study.recipe(best))}}
    )
    card = path_card(run.config, run.study, best, hybrid)
    assert "| b | linear merge of " in card
    assert "`mergekit-multi mergekit.yaml --intermediate-dir TMP --out-path OUT_DIR`" in card
