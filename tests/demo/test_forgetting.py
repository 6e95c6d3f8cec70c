"""The forgetting example at reduced size: tiny base + two continually pre-trained
descendants, an NSGA-II search on two lm-eval objectives, the seed's baselines, the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from evomerge.config import load_run_config
from evomerge.demo.forgetting import build_forgetting_models
from evomerge.demo.forgetting_run import LINEAR, dominates, run_forgetting
from evomerge.judge import available_judges
from evomerge.run import BASELINES_JSON

pytest.importorskip("lm_eval")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "forgetting.yaml"


def test_the_example_validates() -> None:
    cfg = load_run_config(EXAMPLE)
    assert cfg.search.sampler == "nsga2" and cfg.space_spec().name == "task_arithmetic_with_base"
    assert cfg.judging is not None and cfg.generation is not None
    assert cfg.generation.prompts is None  # lm_eval judges need no prompt set
    assert {s.type for s in cfg.judging.judges.values()} == {"lm_eval"} <= set(available_judges())
    assert [o.name for o in cfg.judging.objectives] == ["skill", "general"]
    assert cfg.models.base == ROOT / "examples" / "forgetting_models" / "base"


def test_dominates() -> None:
    both = ["maximize", "maximize"]
    assert dominates([1, 2], [1, 1], both) and not dominates([1, 1], [1, 1], both)
    assert not dominates([2, 0], [1, 1], both)
    assert dominates([0, 2], [1, 1], ["minimize", "maximize"])


def test_forgetting_run_at_reduced_size(tmp_path: Path) -> None:
    models = build_forgetting_models(tmp_path / "models", size="tiny")
    data = yaml.safe_load(EXAMPLE.read_text())
    data["models"]["base"] = str(models.base)
    data["models"]["sources"] = [str(models.descendants[s]) for s in ("register", "facts")]
    data["search"].update(n_trials=12, population_size=6)
    data["space_overrides"] = {"layer_granularity": 2}
    data["judging"]["judges"]["register"]["options"].update(
        limit=6, gen_kwargs={"max_gen_toks": 40}
    )
    data["workers"] = {"num": 1, "device": "cpu"}
    cfg_path = tmp_path / "forgetting.yaml"
    cfg_path.write_text(yaml.safe_dump(data, allow_unicode=True))

    result = run_forgetting(cfg_path, tmp_path / "run")

    assert result.objective_names == ["skill", "general"]
    assert result.front, "the Pareto front is empty"
    assert set(result.baselines) == {
        LINEAR,
        "ties 0.5/0.5",
        "dare_linear 0.5/0.5",
        "dare_ties 0.5/0.5",
    }
    assert result.dominating_linear, (result.front, result.baselines[LINEAR])
    for n in result.dominating_linear:
        assert dominates(result.front[n], result.baselines[LINEAR], ["maximize", "maximize"])
    stored = json.loads((tmp_path / "run" / BASELINES_JSON).read_text())
    assert stored[LINEAR]["values"] == result.baselines[LINEAR]
    assert result.report is not None and result.report.exists()
    html = result.report.read_text()
    assert "Pareto front" in html and LINEAR in html
