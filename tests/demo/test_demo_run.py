"""The demo end to end: reduced size in the default run, the full demo (best > sources) slow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evomerge.demo.run import run_demo


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
    assert set(summary["sources"]) == {"style", "facts"} and set(summary["heldout"]["sources"]) == {
        "style",
        "facts",
    }
    for key in ("best", "seconds"):
        assert isinstance(summary[key], float)
    # the best merge is scored again outside the search with the same judges: same value
    assert summary["best"] == pytest.approx(status["best"]["values"][0], abs=1e-9)
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


def test_demo_pipeline_at_reduced_size(tmp_path: Path) -> None:
    result = run_demo(
        tmp_path / "run", trials=4, progress=False, cache_dir=tmp_path / "cache", size="tiny"
    )
    _check_outputs(tmp_path / "run", result.summary, trials=4)
    assert "best merge" in result.table and "held-out" in result.format()


@pytest.mark.slow
def test_full_demo_beats_both_sources(tmp_path: Path) -> None:
    result = run_demo(tmp_path / "run", progress=False, cache_dir=tmp_path / "cache")
    s = result.summary
    _check_outputs(tmp_path / "run", s, trials=s["n_complete"] + s["n_failed"])
    assert all(s["best"] > v for v in s["sources"].values()), s
    assert s["beats_sources"]
