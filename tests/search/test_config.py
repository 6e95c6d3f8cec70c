"""RunConfig loading, the worker plan, the status of a multi-objective study, and the
generate-and-judge evaluator on a real tiny model (all without Ray)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from evomerge.config import RunConfig, WorkersConfig, load_run_config
from evomerge.exceptions import ConfigError, SearchError
from evomerge.run import (
    build_space,
    format_status,
    make_driver_storage,
    open_study,
    study_status,
    write_run_yaml,
)
from evomerge.search import distributions, make_sampler, plan_workers


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_relative_paths_resolve_against_the_yaml_folder(tmp_path: Path) -> None:
    (tmp_path / "cfg").mkdir()
    path = _write(
        tmp_path / "cfg" / "run.yaml",
        {
            "name": "rel",
            "models": {"base": "../m/base", "sources": ["../m/a"]},
            "space": "ties_layerwise",
            "space_overrides": {"layer_granularity": 2},
            "evaluator": {"factory": "evomerge.testing.search:quadratic_evaluator"},
        },
    )
    cfg = load_run_config(path)
    assert cfg.models.base == tmp_path.resolve() / "cfg" / ".." / "m" / "base"
    assert cfg.root == (tmp_path / "cfg").resolve()
    assert cfg.space_spec().layer_granularity == 2
    assert cfg.search.sampler == "cmaes" and cfg.search.x0 == "equal"  # defaults
    # the run.yaml stored in a run dir reloads to the same config, from anywhere
    write_run_yaml(tmp_path, cfg)
    again = load_run_config(tmp_path / "run.yaml")
    assert again.canonical() == cfg.canonical()


def test_every_error_at_once_with_file_and_field(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "bad.yaml",
        {
            "name": "bad name!",
            "models": {"base": "b", "sources": [], "names": ["x"]},
            "space": "ties_layerwise",
            "search": {"sampler": "cma", "n_trials": 0},
            "workers": {"num": 0},
            "typo": 1,
        },
    )
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    text = str(err.value)
    assert text.startswith(f"{path}:")
    for field in (
        "name",
        "models.sources",
        "search.sampler",
        "search.n_trials",
        "workers.num",
        "typo",
    ):
        assert f"  {field}:" in text, field


def test_a_run_needs_an_objective_and_a_valid_space(tmp_path: Path) -> None:
    base = {"name": "x", "models": {"base": "b", "sources": ["a"]}}
    with pytest.raises(ConfigError, match=r"missing section\(s\) \['generation', 'judging'\]"):
        load_run_config(_write(tmp_path / "a.yaml", {**base, "space": "ties_layerwise"}))
    with pytest.raises(ConfigError, match=r"space: .*Unknown search space 'nope'"):
        load_run_config(
            _write(tmp_path / "b.yaml", {**base, "space": "nope", "evaluator": {"factory": "m:f"}})
        )
    with pytest.raises(ConfigError, match=r"evaluator\.factory"):
        load_run_config(
            _write(
                tmp_path / "c.yaml",
                {**base, "space": "ties_layerwise", "evaluator": {"factory": "no colon"}},
            )
        )


def test_worker_plan() -> None:
    cpu = plan_workers(WorkersConfig(cpus_per_worker=0.5), resources={"CPU": 4.0})
    assert (cpu.num, cpu.device, cpu.num_cpus, cpu.num_gpus) == (8, "cpu", 0.5, 0.0)
    gpu = plan_workers(WorkersConfig(), resources={"CPU": 16.0, "GPU": 4.0})
    assert (gpu.num, gpu.device, gpu.num_gpus) == (4, "cuda", 1.0)  # one per GPU
    assert (
        plan_workers(WorkersConfig(num=2), resources={"CPU": 16.0, "GPU": 4.0}, num=3).num == 3
    )  # --workers wins
    with pytest.raises(SearchError, match=r"workers\.device is cuda but the cluster has 0 GPU"):
        plan_workers(WorkersConfig(device="cuda"), resources={"CPU": 4.0})


def test_status_of_a_multi_objective_study_has_a_pareto_front(
    tiny_models: Any, run_yaml: Any, tmp_path: Path
) -> None:
    path = run_yaml(
        tmp_path / "run.yaml",
        tiny_models.as_dict(),
        name="mo",
        search={"sampler": "nsga2", "population_size": 4},
    )
    cfg = load_run_config(path)
    run_dir = tmp_path / "rd"
    run_dir.mkdir()
    write_run_yaml(run_dir, cfg)
    space = build_space(cfg)
    storage, commit = make_driver_storage(run_dir, "journal")
    sampler = make_sampler(cfg.search, n_objectives=2, seed=0)
    study, _ = open_study(
        storage=storage, study_name="mo", sampler=sampler, directions=["maximize", "maximize"]
    )
    study.set_user_attr("objective_names", ["persona", "general"])
    points = [(1.0, 0.0), (0.0, 1.0), (0.5, 0.5), (0.2, 0.2)]  # the last one is dominated
    for a, b in points:
        t = study.ask(distributions(space))
        t.set_user_attr("recipe", space.decode(space.from_params(t.params)).to_mergekit_dict())
        study.tell(t, [a, b])
    commit()
    info = study_status(run_dir)
    json.dumps(info)  # JSON-able
    assert info["directions"] == ["maximize", "maximize"] and info["n_complete"] == 4
    assert [e["trial"] for e in info["pareto"]] == [0, 2, 1]  # ordered by the first objective
    assert info["best"]["trial"] == 0 and info["best"]["recipe"]["merge_method"] == "linear"
    assert all(set(e) >= {"trial", "values", "recipe"} for e in info["pareto"])
    table = format_status(info)
    assert "pareto front (3 trial(s))" in table and "persona" in table


def test_the_generate_and_judge_evaluator_scores_a_recipe(tiny_models: Any, tmp_path: Path) -> None:
    """The default pipeline on a real tiny model: merge -> load -> generate -> judge."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "\n".join(json.dumps({"question": q}) for q in ("hello there", "who are you?")) + "\n"
    )
    data = {
        "name": "pipe",
        "models": {
            "base": str(tiny_models.base),
            "sources": [str(tiny_models.ft_a), str(tiny_models.lora_a)],
        },
        "space": "ties_layerwise",
        "space_overrides": {"layer_granularity": 2},
        "generation": {
            "prompts": str(prompts),
            "params": {"max_new_tokens": 8},
            "dtype": "float32",
        },
        "judging": {
            "judges": {"len": {"type": "length", "options": {"min_chars": 1, "max_chars": 50}}}
        },
    }
    cfg = RunConfig.model_validate(data)
    from evomerge.search import get_evaluator_factory

    ev = get_evaluator_factory("pipeline")(cfg, device="cpu", worker_index=0, run_dir=tmp_path)
    assert ev.objective_names == ["score"] and ev.directions == ["maximize"]
    space = build_space(cfg)
    result = ev.evaluate(0, space.decode(space.x0()))
    assert result.error is None and len(result.values or []) == 1
    assert set(result.scores) == {"len"} and len(result.samples) == 2
    assert {"merge_s", "generate_s", "judge_s"} <= set(result.timings)
