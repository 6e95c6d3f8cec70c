"""``evomerge merge``: end to end through the CLI, loading, and equality with mergekit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from evomerge.cli import app
from evomerge.export import emit_mergekit_yaml, merge_from_yaml
from evomerge.merge.recipe import MergeRecipe

# Deterministic methods, with mergekit's grammar: gradients and filters included.
RECIPES: dict[str, dict] = {
    "linear": {
        "models": [
            {"model": "{ft_a}", "parameters": {"weight": [0.2, 0.8]}},
            {"model": "{ft_b}", "parameters": {"weight": 0.5}},
        ],
        "merge_method": "linear",
        "dtype": "float32",
    },
    "task_arithmetic": {
        "models": [
            {
                "model": "{ft_a}",
                "parameters": {"weight": [{"filter": "self_attn", "value": 0.9}, {"value": 0.3}]},
            },
            {"model": "{ft_b}", "parameters": {"weight": 0.6}},
        ],
        "merge_method": "task_arithmetic",
        "base_model": "{base}",
        "dtype": "float32",
    },
    "ties": {
        "models": [
            {"model": "{ft_a}", "parameters": {"weight": 0.7, "density": [0.3, 0.9]}},
            {"model": "{ft_b}", "parameters": {"weight": 0.5, "density": 0.5}},
        ],
        "merge_method": "ties",
        "base_model": "{base}",
        "parameters": {"normalize": True},
        "dtype": "float32",
    },
}


def _write_config(tmp_path: Path, tiny_models: dict[str, Path], recipe: dict, **extra) -> Path:
    text = yaml.safe_dump({**recipe, **extra}, sort_keys=False)
    for key, path in tiny_models.items():
        text = text.replace("{" + key + "}", str(path))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(text)
    return cfg


def _run_mergekit(cfg: Path, out: Path) -> None:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    config = MergeConfiguration.model_validate(yaml.safe_load(cfg.read_text()))
    run_merge(
        config,
        str(out),
        MergeOptions(copy_tokenizer=False, lazy_unpickle=False, device="cpu", quiet=True),
    )


@pytest.mark.parametrize("method", sorted(RECIPES))
def test_merge_equals_mergekit_yaml(method, tiny_models, read_weights, tmp_path):
    cfg = _write_config(tmp_path, tiny_models, RECIPES[method])
    ours = merge_from_yaml(cfg, tmp_path / "ours")
    _run_mergekit(cfg, tmp_path / "mergekit")

    got, ref = read_weights(ours), read_weights(tmp_path / "mergekit")
    assert got.keys() == ref.keys()
    base = read_weights(tiny_models["base"])
    for name, r in ref.items():
        assert got[name].dtype == r.dtype == torch.float32, name
        torch.testing.assert_close(
            got[name], r, atol=1e-5, rtol=0, msg=lambda m, n=name: f"{n}: {m}"
        )
    assert any(not torch.equal(got[n], base[n]) for n in got)  # the merge did something


def test_cli_merge_writes_a_loadable_checkpoint(tiny_models, read_weights, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = _write_config(
        tmp_path, tiny_models, RECIPES["ties"], tokenizer_source="base", out_dtype="bfloat16"
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["merge", str(cfg), str(out), "--shard-size", "60KB", "--quiet"]
    )
    assert result.exit_code == 0, result.output

    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 2
    config = json.loads((out / "config.json").read_text())
    assert config["dtype"] == "bfloat16"
    assert all(t.dtype == torch.bfloat16 for t in read_weights(out).values())
    assert (out / "tokenizer.json").read_bytes() == (
        tiny_models["base"] / "tokenizer.json"
    ).read_bytes()
    written = MergeRecipe.from_yaml(out / "mergekit_config.yml")
    assert written == MergeRecipe.from_yaml(cfg)

    model = AutoModelForCausalLM.from_pretrained(str(out))
    tok = AutoTokenizer.from_pretrained(str(out))
    with torch.no_grad():
        logits = model(**tok("hello there", return_tensors="pt")).logits
    assert torch.isfinite(logits).all()
    merged = read_weights(out)["model.layers.0.mlp.up_proj.weight"]
    assert torch.equal(model.model.layers[0].mlp.up_proj.weight, merged)


def test_cli_merge_as_a_subprocess(tiny_models, read_weights, tmp_path):
    cfg = _write_config(tmp_path, tiny_models, RECIPES["linear"])
    proc = subprocess.run(
        [sys.executable, "-m", "evomerge.cli", "merge", str(cfg), str(tmp_path / "out"), "--quiet"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(read_weights(tmp_path / "out")) == sorted(read_weights(tiny_models["base"]))


def test_cli_refuses_an_existing_output_with_a_clean_message(tiny_models, tmp_path):
    cfg = _write_config(tmp_path, tiny_models, RECIPES["linear"])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    result = CliRunner().invoke(app, ["merge", str(cfg), str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 2
    assert "exists and is not empty" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["keep.txt"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"models": None}, ["cfg.yaml", "models"]),
        ({"tokenizer_source": "union"}, ["cfg.yaml", "tokenizer_source", "'union'", "only 'base'"]),
        ({"out_dtype": "bf16"}, ["cfg.yaml", "out_dtype", "'bf16'", "bfloat16"]),
        ({"chat_template": "chatml"}, ["cfg.yaml", "chat_template"]),
    ],
)
def test_bad_config_names_file_and_field(change, expected, tiny_models, tmp_path):
    recipe = {k: v for k, v in {**RECIPES["linear"], **change}.items() if v is not None}
    cfg = _write_config(tmp_path, tiny_models, recipe)
    result = CliRunner().invoke(app, ["merge", str(cfg), str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    for piece in expected:
        assert piece in result.stderr, (piece, result.stderr)
    assert result.stdout == ""
    assert not (tmp_path / "out").exists()


def test_emit_mergekit_yaml_round_trips(tiny_models, tmp_path):
    cfg = _write_config(tmp_path, tiny_models, RECIPES["ties"])
    recipe = MergeRecipe.from_yaml(cfg)
    path = emit_mergekit_yaml(recipe, tmp_path / "sub" / "mergekit.yaml")
    assert MergeRecipe.from_yaml(path) == recipe
    assert sorted(p.name for p in path.parent.iterdir()) == ["mergekit.yaml"]


def test_vocab_cropped_merge_updates_vocab_size_and_loads(tiny_models, read_weights, tmp_path):
    from transformers import AutoModelForCausalLM

    from evomerge.testing.tiny import perturb_model

    base_vocab = json.loads((tiny_models["base"] / "config.json").read_text())["vocab_size"]
    small = perturb_model(
        tiny_models["base"], tmp_path / "ft_small", seed=7, vocab_size=base_vocab - 8
    )
    models = {**tiny_models, "ft_b": small}
    cfg = _write_config(tmp_path, models, RECIPES["task_arithmetic"])
    out = merge_from_yaml(cfg, tmp_path / "out")
    assert json.loads((out / "config.json").read_text())["vocab_size"] == base_vocab - 8
    weights = read_weights(out)
    assert weights["model.embed_tokens.weight"].shape[0] == base_vocab - 8
    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert torch.equal(model.lm_head.weight, weights["lm_head.weight"])


def test_out_of_range_parameters_fail_before_any_model_is_opened(
    tiny_models, tmp_path, monkeypatch
):
    import evomerge.export.merge_cmd as merge_cmd

    def no_models(*_a, **_k):
        raise AssertionError("a model was opened")

    monkeypatch.setattr(merge_cmd, "pool_for_recipe", no_models)
    recipe = {
        **RECIPES["ties"],
        "models": [
            {"model": "{ft_a}", "parameters": {"weight": 0.7, "density": 1.5}},
            {"model": "{ft_b}", "parameters": {"weight": 0.5, "density": [0.5, 1.2]}},
        ],
    }
    cfg = _write_config(tmp_path, tiny_models, recipe)
    result = CliRunner().invoke(app, ["merge", str(cfg), str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 2, result.output
    for piece in (
        "cfg.yaml",
        "models[0].parameters.density: 1.5 is outside the allowed range [0, 1]",
        "models[1].parameters.density: 1.2 is outside the allowed range [0, 1]",
    ):
        assert piece in result.stderr, (piece, result.stderr)
    assert not (tmp_path / "out").exists()
