"""``evomerge demo --backend vllm``: the demo on vLLM's CPU build, scoring its sources as
the hf backend does (barely trained models: this checks the plumbing, not the claims)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from evomerge.cli import app
from evomerge.config import load_run_config
from evomerge.demo.baselines import SplitScorer, source_recipe
from evomerge.demo.run import run_demo
from evomerge.run import open_pool

pytestmark = pytest.mark.vllm


def test_demo_with_vllm_gives_the_hf_source_scores(vllm_cpu: Any, tmp_path: Path) -> None:
    result = run_demo(
        tmp_path / "run",
        trials=3,
        progress=False,
        cache_dir=tmp_path / "cache",
        size="tiny",
        grid_step=1.5,
        export=False,
        backend="vllm",
    )
    s = result.summary
    assert s["backend"] == "vllm" and s["n_complete"] == 3, s
    config = load_run_config(tmp_path / "run" / "demo_run.yaml")
    assert config.generation is not None and config.generation.backend == "vllm"

    hf_config = config.model_copy(
        update={
            "generation": config.generation.model_copy(
                update={"backend": "hf", "backend_options": {}}
            )
        }
    )
    pool = open_pool(hf_config)
    base = str(hf_config.models.base)
    for split, got in (("search", s["sources"]), ("heldout", s["heldout"]["sources"])):
        scorer = SplitScorer(hf_config, split)  # type: ignore[arg-type]
        for name in pool.source_names:
            want = scorer(name, source_recipe(pool, base, name))
            assert got[name] == pytest.approx(want.value, abs=1e-9), (split, name)
            if split == "search":
                assert s["scores"][name] == pytest.approx(want.scores, abs=1e-9)
    assert any(v > 0 for v in s["sources"].values())  # not a degenerate all-zero objective


def test_demo_cli_takes_the_backend_option() -> None:
    result = CliRunner().invoke(app, ["demo", "--help"])
    assert result.exit_code == 0 and "--backend" in result.output
