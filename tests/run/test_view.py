"""The run layer's one definition of "the best trial", as every command reads it.

A study is written the way the driver writes it (run.yaml, journal, recipes in the trial
attributes), then status, the report, export and the model card are asked about it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState

from evomerge.exceptions import ExportError, SearchError
from evomerge.export import export_trial
from evomerge.report import load_report_data, write_report
from evomerge.run import open_run, study_status

C, F = TrialState.COMPLETE, TrialState.FAIL


def _numbers(trials: list) -> list[int]:
    return [t.number for t in trials]


def test_multi_objective_best_is_one_trial_for_report_status_and_export(
    make_run_dir: Callable[..., Path], tmp_path: Path
) -> None:
    """Trials 0 and 1 are both on the front; 1 is better in the first objective. Every
    command says trial 1 (the report once showed trial 0 while export wrote trial 1)."""
    run_dir = make_run_dir(
        ["maximize", "maximize"], [(C, [1.0, 2.0]), (C, [2.0, 1.0]), (C, [0.5, 0.5])]
    )
    view = open_run(run_dir).study
    assert _numbers(view.pareto()) == [1, 0]  # the front, best first; trial 2 is dominated
    assert view.best().number == 1 and view.pick("best").number == 1
    assert _numbers(view.top_k(1)) == [1] and _numbers(view.top_k(5)) == [1, 0]

    status = study_status(run_dir)
    assert status["best"]["trial"] == 1
    assert [e["trial"] for e in status["pareto"]] == [1, 0]

    data = load_report_data(run_dir)
    assert data.best is not None and data.best.number == 1
    assert [t.number for t in data.front] == [1, 0]
    html = write_report(run_dir).read_text(encoding="utf-8")
    assert "Best genome (trial 1)" in html and "best (trial 1)" in html

    out = export_trial(run_dir, tmp_path / "best", trial="best")
    card = (out / "README.md").read_text(encoding="utf-8")
    assert re.search(r"^# views: trial 1$", card, flags=re.M)
    recipe = view.recipe(view.best())
    assert yaml.safe_load((out / "mergekit.yaml").read_text()) == yaml.safe_load(
        recipe.to_mergekit_yaml()
    )


def test_single_objective_ranking_direction_and_ties(make_run_dir: Callable[..., Path]) -> None:
    trials = [(C, [3.0]), (C, [1.0]), (F, None), (C, [1.0]), (C, [2.0])]
    low = open_run(make_run_dir(["minimize"], trials, name="min")).study
    assert low.best().number == 1  # ties go to the lower trial number
    assert _numbers(low.top_k(3)) == [1, 3, 4] and _numbers(low.pareto()) == [1]
    high = open_run(make_run_dir(["maximize"], trials, name="max")).study
    assert high.best().number == 0 and _numbers(high.top_k(2)) == [0, 4]
    assert high.top_k(0) == [] and high.counts().complete == 4 and high.counts().failed == 1


def test_multi_objective_ties_in_the_first_objective_go_to_the_lower_number(
    make_run_dir: Callable[..., Path],
) -> None:
    run_dir = make_run_dir(["minimize", "maximize"], [(C, [1.0, 1.0]), (C, [1.0, 1.0])])
    assert _numbers(open_run(run_dir).study.pareto()) == [0, 1]


def test_pick_refuses_what_cannot_be_exported(
    make_run_dir: Callable[..., Path], tmp_path: Path
) -> None:
    view = open_run(make_run_dir(["maximize"], [(C, [1.0]), (F, None)])).study
    assert view.pick(0).number == 0 and view.pick("0").number == 0
    with pytest.raises(SearchError, match=r"no trial 7 in the study \(trials 0\.\.1\)"):
        view.pick(7)
    with pytest.raises(SearchError, match=r"trial 1 is FAIL: boom 1!+; pick a complete trial"):
        view.pick(1)
    with pytest.raises(SearchError, match="'best' or a trial number"):
        view.pick("worst")
    empty = open_run(make_run_dir(["maximize"], [(F, None)], name="empty")).study
    assert empty.best() is None and empty.pareto() == [] and empty.top_k(3) == []
    with pytest.raises(SearchError, match="no complete trial"):
        empty.pick("best")
    with pytest.raises(ExportError, match="no complete trial"):
        export_trial(tmp_path / "empty", tmp_path / "out")


def test_counts_names_and_recipes_of_odd_trials(make_run_dir: Callable[..., Path]) -> None:
    P, R, W = TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING
    trials = [(C, [1.0]), (F, None), (F, None), (P, None), (R, None), (W, None), (C, [2.0])]
    run_dir = make_run_dir(
        ["minimize"],
        trials,
        named=False,
        trial_attrs={2: {"interrupted": True}, 6: {"recipe": None}},
    )
    view = open_run(run_dir).study
    counts = view.counts()
    assert (counts.complete, counts.failed, counts.interrupted) == (2, 1, 1)
    # a pruned trial (search.pruning) counts toward the budget: finished = 2 + 1 + 1
    assert (counts.running, counts.waiting, counts.pruned, counts.finished) == (1, 1, 1, 4)
    assert view.objective_names == ["objective0"] and view.directions == ["minimize"]
    assert view.attr("missing", "d") == "d" and view.attr("space") == "linear_layerwise"
    assert _numbers(view.trials(F, P)) == [1, 2, 3] and len(view.trials()) == 7
    assert view.name == "views" and view.best().number == 0
    with pytest.raises(SearchError, match=r"no trial 9 in the study \(trials 0\.\.6\)"):
        view.pick(9)
    with pytest.raises(SearchError, match="trial 6 has no recorded recipe"):
        view.recipe(view.pick(6))
    assert view.recipe(view.pick("0")).merge_method == "linear"
    with pytest.raises(ExportError, match="trial 6 has no recorded recipe"):
        export_trial(run_dir, run_dir / "out", trial=6)
