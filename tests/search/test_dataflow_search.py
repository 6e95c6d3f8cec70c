"""A data-flow search end to end on a local Ray cluster: real workers re-wire a path model
per trial, generate with the hf backend and judge; then export, status and report.
Plus the run-config errors of a data-flow space and the pinning of its sources."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml

from evomerge.config import load_run_config
from evomerge.exceptions import ConfigError, SearchError
from evomerge.export import export_trial
from evomerge.generate import GenerationParams, HFGenerator
from evomerge.merge import LayerPath
from evomerge.report import write_report
from evomerge.run import attrs, build_run_space, format_status, open_run, study_status
from evomerge.search import run_search
from evomerge.space import DataflowSpace

QUESTIONS = ["hello there", "What is your name?", "how old are you", "a b c"]
MAX_NEW = 6


def _run_dict(models: dict[str, Path], root: Path, **space: Any) -> dict[str, Any]:
    prompts = root / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"id": f"q{i}", "question": q}) + "\n" for i, q in enumerate(QUESTIONS))
    )
    return {
        "name": "dfs",
        "models": {
            "base": str(models["a"]),
            "sources": [str(models["a"]), str(models["b"])],
            "names": ["a", "b"],
        },
        "space": {"type": "dataflow", "order": "interleaved", **space},
        "search": {
            "sampler": "cmaes",
            "n_trials": 6,
            "population_size": 4,
            "seed": 0,
            "retries": 0,
        },
        "generation": {
            "backend": "hf",
            "params": {"max_new_tokens": MAX_NEW, "batch_size": 4},
            "prompts": str(prompts),
        },
        "judging": {
            "judges": {"length": {"type": "length", "options": {"min_chars": 1, "max_chars": 4}}}
        },
        "workers": {"num": 1, "cpus_per_worker": 1, "start_timeout_s": 300},
        "analysis": {"top_k": 2, "report": False},
    }


def _linear(a: Path, b: Path, wa: float = 0.5) -> dict[str, Any]:
    return {
        "models": [
            {"model": str(a), "parameters": {"weight": wa}},
            {"model": str(b), "parameters": {"weight": 1 - wa}},
        ],
        "merge_method": "linear",
        "dtype": "float32",
    }


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def dfs_run(
    ray_local: None, dataflow_models: Any, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("dfs_run")
    models = {"a": dataflow_models.a, "b": dataflow_models.b}
    # the hybrid: a weight merge of a and b is a third source, merged in each worker
    (root / "ps.yaml").write_text(yaml.safe_dump(_linear(models["a"], models["b"])))
    ps = {"name": "ps", "recipe": "ps.yaml"}
    path = _write(root / "run.yaml", _run_dict(models, root, sources=["a", "b", ps]))
    summary = run_search(path, run_dir=root / "rd", progress=False)
    return {"yaml": path, "run_dir": root / "rd", "summary": summary, "models": models}


def test_search_records_paths_and_the_start_point_is_the_embedding_model(
    dfs_run: dict[str, Any],
) -> None:
    s = dfs_run["summary"]
    assert s.n_complete == 6 and s.n_failed == 0
    run = open_run(dfs_run["run_dir"])
    trials = run.study.complete()
    assert all(attrs.PATH in t.user_attrs and attrs.RECIPE not in t.user_attrs for t in trials)
    pinned = run.study.attr(attrs.PATH_SOURCES)
    assert pinned["b"] == {"model": str(dfs_run["models"]["b"])}
    assert pinned["ps"]["recipe"]["merge_method"] == "linear"
    assert any(s[0] == "ps" for t in trials for s in t.user_attrs[attrs.PATH]["slots"])
    start = next(t for t in run.study.trials() if t.user_attrs.get(attrs.START_POINT))
    path = run.study.path(start)
    assert [(x.source, x.layer, x.scale) for x in path.slots] == [("a", i, 1.0) for i in range(4)]
    # the worker's answers for the start point are model a's own answers
    gen = HFGenerator.from_pretrained(dfs_run["models"]["a"], device="cpu", dtype="float32")
    cfg = load_run_config(dfs_run["yaml"])
    from evomerge.generate import build_prompt_items

    items = build_prompt_items(cfg.generation, tokenizer_path=dfs_run["models"]["a"])
    own = gen.generate(
        [p.prompt for p in items], GenerationParams(max_new_tokens=MAX_NEW, batch_size=4)
    )
    assert [x["answer"] for x in start.user_attrs[attrs.SAMPLES]] == own[:3]
    # trials explore other paths than the start
    assert len({json.dumps(t.user_attrs[attrs.PATH]["slots"]) for t in trials}) > 1


def test_export_status_and_report(dfs_run: dict[str, Any], tmp_path: Path) -> None:
    run_dir = dfs_run["run_dir"]
    run = open_run(run_dir)
    best = run.study.best()
    path = run.study.path(best)
    out = export_trial(run_dir, tmp_path / "best")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_hidden_layers"] == len(path)
    card = (out / "README.md").read_text()
    hybrid = "ps" in path.used_sources()
    assert "## Path" in card and ("mergekit-multi" if hybrid else "mergekit-yaml") in card
    assert "passthrough" in (out / "mergekit.yaml").read_text()
    from transformers import AutoModelForCausalLM

    from evomerge.generate import PathModel
    from evomerge.merge import open_path_sources

    pm = PathModel.build(open_path_sources(path.sources), embedding=path.embedding)
    pm.set_path(path)
    ids = torch.tensor([[1, 20, 21, 22, 23, 24]])
    with torch.no_grad():
        torch.testing.assert_close(
            AutoModelForCausalLM.from_pretrained(str(out)).float()(input_ids=ids).logits,
            pm.model(input_ids=ids).logits,
            rtol=1e-4,
            atol=1e-4,
        )
    # a trial off the start point: the worker answered with that path (the exported model's answers)
    start = [("a", i, 1.0) for i in range(4)]
    other = next(
        t
        for t in run.study.complete()
        if [tuple(x) for x in t.user_attrs[attrs.PATH]["slots"]] != start
    )
    out2 = export_trial(run_dir, tmp_path / "other", trial=other.number)
    cfg_run = load_run_config(dfs_run["yaml"])
    from evomerge.generate import build_prompt_items

    items = build_prompt_items(cfg_run.generation, tokenizer_path=out2)
    answers = HFGenerator.from_pretrained(out2, device="cpu", dtype="float32").generate(
        [p.prompt for p in items], GenerationParams(max_new_tokens=MAX_NEW, batch_size=4)
    )
    assert [x["answer"] for x in other.user_attrs[attrs.SAMPLES]] == answers[:3]
    text = format_status(study_status(run_dir))
    assert f"path: {len(path)} layers, embeddings of a" in text
    report = write_report(run_dir)
    html = report.read_text()
    assert f"Best path (trial {best.number})" in html
    assert (report.parent / "best_path.png").stat().st_size > 1000
    assert not (report.parent / "best_recipe.png").exists()


# -- config errors and source pinning (no Ray) ---------------------------------------------


def _config_error(tmp_path: Path, models: dict[str, Path], mutate: Any) -> str:
    data = _run_dict(models, tmp_path)
    mutate(data)
    with pytest.raises(ConfigError) as err:
        load_run_config(_write(tmp_path / "run.yaml", data))
    return str(err.value)


def test_vllm_is_refused(tmp_path: Path, dataflow_models: Any) -> None:
    models = {"a": dataflow_models.a, "b": dataflow_models.b}
    msg = _config_error(tmp_path, models, lambda d: d["generation"].update(backend="vllm"))
    assert (
        "run.yaml" in msg
        and "generation.backend" in msg
        and "layer count" in msg
        and "backend: hf" in msg
    )


@pytest.mark.parametrize(
    ("space", "words"),
    [
        ({"embedding": "zz"}, "space.embedding: 'zz' is not among the sources (a, b)"),
        ({"sources": ["a", "q"]}, "space.sources.1.model: 'q' is not a model of this run"),
        ({"repetitions": 0}, "repetitions"),
        ({"scales": {"low": -0.5}}, "positive"),
    ],
)
def test_config_errors_name_the_field(
    tmp_path: Path, dataflow_models: Any, space: dict[str, Any], words: str
) -> None:
    models = {"a": dataflow_models.a, "b": dataflow_models.b}
    msg = _config_error(tmp_path, models, lambda d: d["space"].update(space))
    assert words in msg, msg


def test_sources_of_another_hidden_size_fail_before_the_search(
    tmp_path: Path, dataflow_models: Any
) -> None:
    from evomerge.testing.tiny import build_tiny_model

    wide = build_tiny_model(tmp_path / "wide", seed=3, hidden_size=48)
    cfg = load_run_config(
        _write(tmp_path / "run.yaml", _run_dict({"a": dataflow_models.a, "b": wide}, tmp_path))
    )
    with pytest.raises(ConfigError, match=r"space\.sources: 'b' has hidden_size=48"):
        build_run_space(cfg)


def test_hybrid_recipe_source_and_pinning(tmp_path: Path, dataflow_models: Any) -> None:
    from evomerge.search._run import _pin_sources

    recipe = {
        "models": [
            {"model": str(dataflow_models.a), "parameters": {"weight": 0.5}},
            {"model": str(dataflow_models.b), "parameters": {"weight": 0.5}},
        ],
        "merge_method": "linear",
        "dtype": "float32",
    }
    (tmp_path / "ps.yaml").write_text(yaml.safe_dump(recipe))
    data = _run_dict(
        {"a": dataflow_models.a, "b": dataflow_models.b},
        tmp_path,
        sources=["a", {"name": "ps", "recipe": "ps.yaml"}],
    )
    cfg = load_run_config(_write(tmp_path / "run.yaml", data))
    space = build_run_space(cfg)
    assert isinstance(space, DataflowSpace) and space.sources["ps"].recipe is not None
    assert space.num_layers == {"a": 4, "ps": 4}
    study = optuna.create_study()
    _pin_sources(study, space, created=True)
    _pin_sources(study, space, created=False)  # the same sources: fine
    recipe["models"][0]["parameters"]["weight"] = 0.9
    (tmp_path / "ps.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(SearchError, match=r"\['ps'\] resolve to other models"):
        _pin_sources(study, build_run_space(cfg), created=False)
    assert isinstance(space.decode(space.x0()), LayerPath)
