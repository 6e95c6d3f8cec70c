"""The demo end to end: its claims at reduced size in the default run, at full size over 3 seeds (slow)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from evomerge.demo.run import run_demo

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*is_gradient_checkpointing.*:FutureWarning"
)  # from peft


def _check_outputs(run_dir: Path, summary: dict, *, trials: int) -> None:
    from transformers import AutoModelForCausalLM

    from evomerge.run import study_status

    status = study_status(run_dir)
    assert status["n_complete"] + status["n_failed"] == trials
    assert status["n_running"] == 0
    assert (
        summary["n_complete"] == status["n_complete"]
        and summary["best_trial"] == status["best"]["trial"]
    )
    on_disk = json.loads((run_dir / "demo_summary.json").read_text(encoding="utf-8"))
    assert on_disk == summary
    assert set(summary["sources"]) == {"style", "facts"}
    assert set(summary["heldout"]) == {"sources", "start", "uniform_best", "best"}
    assert set(summary["heldout"]["sources"]) == {"style", "facts"}
    for key in ("best", "start", "uniform_best", "objective_max", "seconds"):
        assert isinstance(summary[key], float), key
    # the best merge is scored again outside the search with the same judges: same value
    assert summary["best"] == pytest.approx(status["best"]["values"][0], abs=1e-9)
    # the start point is the search's own first trial, scored again: same value
    assert summary["start"] == pytest.approx(_trial_value(run_dir, 0), abs=1e-9)
    # the uniform grid holds the sources and the start point; its best is its maximum
    grid = {tuple(p["weights"].values()): p["value"] for p in summary["uniform_grid"]}
    assert grid[(1.0, 0.0)] == pytest.approx(summary["sources"]["style"], abs=1e-9)
    assert grid[(0.0, 1.0)] == pytest.approx(summary["sources"]["facts"], abs=1e-9)
    if (0.75, 0.75) in grid:  # the start point, when the grid has it
        assert grid[(0.75, 0.75)] == pytest.approx(summary["start"], abs=1e-9)
    assert summary["uniform_best"] == max(grid.values())
    assert grid[tuple(summary["uniform_best_weights"].values())] == summary["uniform_best"]
    # the exported checkpoint loads, and is the best trial's merge
    model = AutoModelForCausalLM.from_pretrained(run_dir / "best_model")
    assert model.config.num_hidden_layers >= 1
    assert (run_dir / "best_model" / "mergekit.yaml").exists()
    # the report holds the plots, embedded, and the sources' baselines
    html = (run_dir / "report" / "report.html").read_text(encoding="utf-8")
    for stem in ("history", "best_recipe", "timings"):
        assert f'id="{stem}"' in html and (run_dir / "report" / f"{stem}.png").exists()
    assert html.count("data:image/png;base64,") >= 3
    assert "source <b>style</b>" in html and "source <b>facts</b>" in html


def _trial_value(run_dir: Path, number: int) -> float:
    from evomerge.run import attrs, open_run

    trial = next(t for t in open_run(run_dir).study.complete() if t.number == number)
    assert trial.user_attrs.get(attrs.START_POINT), "trial 0 is not the start point"
    return float(trial.values[0])


def _claims(s: dict[str, Any]) -> dict[str, float]:
    """Each claim of the demo as a margin that must be > 0 (search gain: >= 5%)."""
    h = s["heldout"]
    return {
        "headroom": s["objective_max"] - s["best"],
        "search: best / start - 1 - 5%": s["best"] / s["start"] - 1.05,
        "held-out: best - style": h["best"] - h["sources"]["style"],
        "held-out: best - facts": h["best"] - h["sources"]["facts"],
        "held-out: best - start": h["best"] - h["start"],
        "held-out: best - uniform best": h["best"] - h["uniform_best"],
    }


def test_demo_claims_hold_at_reduced_size(tmp_path: Path) -> None:
    """Less trained models, 16 trials, a coarser grid: the search still earns its keep."""
    trials = 16
    result = run_demo(
        tmp_path / "run",
        trials=trials,
        progress=False,
        cache_dir=tmp_path / "cache",
        size="small",
        grid_step=0.5,
    )
    s = result.summary
    _check_outputs(tmp_path / "run", s, trials=trials)
    assert s["objective_max"] == 3.0
    claims = _claims(s)
    assert all(v > 0 for v in claims.values()), (claims, result.table)
    text = result.format()
    for row in ("style", "facts", "start point", "uniform best (", "best merge (trial"):
        assert row in result.table
    assert "does NOT beat" not in text and "held-out: the best merge beats" in text


@pytest.mark.slow
def test_full_demo_claims_hold_over_three_seeds(tmp_path: Path) -> None:
    """The claims at full size, and the control: per-layer weights are what the search needs.

    The control searches the same models with one weight per source for all layers (one
    layer group): a uniform-weight search. The per-layer search must beat it.
    """
    margins: dict[str, list[float]] = {}
    cache = tmp_path / "cache"
    for seed in (0, 1, 2):
        result = run_demo(tmp_path / f"run{seed}", progress=False, cache_dir=cache, seed=seed)
        s = result.summary
        _check_outputs(tmp_path / f"run{seed}", s, trials=s["n_complete"] + s["n_failed"])
        print(f"\nseed {seed} ({s['seconds']} s)\n{result.table}")
        for name, v in _claims(s).items():
            margins.setdefault(name, []).append(v)
        if seed == 0:  # the control, on the same (cached) models
            control = run_demo(
                tmp_path / "uniform0",
                progress=False,
                cache_dir=cache,
                seed=0,
                layer_granularity=4,
                export=False,
            ).summary
            gain = (s["best"] - control["best"], s["heldout"]["best"] - control["heldout"]["best"])
            print(
                f"per-layer minus uniform-weight search (seed 0): search {gain[0]:+.3f}, "
                f"held-out {gain[1]:+.3f}"
            )
            assert min(gain) > 0, (s, control)
    print("\nmargin (min / median / max over seeds 0, 1, 2):")
    for name, vs in margins.items():
        print(f"  {name:<34} {min(vs):+.3f} / {statistics.median(vs):+.3f} / {max(vs):+.3f}")
    assert all(v > 0 for vs in margins.values() for v in vs), margins


def test_cli_demo_passes_its_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from evomerge import cli
    from evomerge.demo import run as run_mod

    seen: dict[str, Any] = {}

    class Done:
        def format(self) -> str:
            return "the table"

    def fake_run_demo(run_dir: Path, **kwargs: Any) -> Done:
        seen.update(kwargs, run_dir=run_dir)
        return Done()

    monkeypatch.setattr(run_mod, "run_demo", fake_run_demo)
    args = ["demo", "--run-dir", str(tmp_path), "--trials", "7", "--seed", "2", "--quiet"]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    assert "the table" in result.output
    assert seen == {
        "run_dir": tmp_path,
        "trials": 7,
        "seed": 2,
        "progress": False,
        "backend": "hf",
    }
