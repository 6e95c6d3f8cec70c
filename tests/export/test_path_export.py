"""Exporting a data-flow path: a standard checkpoint whose logits equal the in-memory path's
(scales folded, repeated layers), tied embeddings kept tied, and a mergekit passthrough
YAML that mergekit 0.1.5 (the oracle, run as its own command) rebuilds to the same weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from evomerge.exceptions import ConfigError, ExportError
from evomerge.export._path import fold_factors, write_path_checkpoint
from evomerge.generate._path_model import PathModel
from evomerge.merge import open_path_sources
from evomerge.merge.path import LayerPath, PathSlot, PathSource
from evomerge.merge.recipe import MergeRecipe

IDS = torch.tensor([[1, 5, 9, 14, 20, 33, 41, 7], [1, 60, 2, 3, 70, 71, 72, 73]])


def _path(sources: dict[str, PathSource], steps: list[tuple], emb: str = "a") -> LayerPath:
    slots = tuple(
        PathSlot(source=s[0], layer=s[1], scale=s[2] if len(s) > 2 else 1.0) for s in steps
    )
    return LayerPath(sources=sources, embedding=emb, slots=slots)


def _weights(d: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def _logits_in_memory(path: LayerPath) -> torch.Tensor:
    pm = PathModel.build(open_path_sources(path.sources), embedding=path.embedding)
    pm.set_path(path)
    with torch.no_grad():
        return pm.model(input_ids=IDS).logits


def _logits_of(d: Path) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(str(d), dtype=torch.float32)
    with torch.no_grad():
        return m(input_ids=IDS).logits


def _mergekit(cmd: str, yaml_file: Path, out: Path, tmp: Path) -> dict[str, torch.Tensor]:
    exe = str(Path(sys.executable).parent / cmd)
    args = (
        [exe, str(yaml_file), "--out-path", str(out)]
        if cmd == "mergekit-multi"
        else [exe, str(yaml_file), str(out)]
    )
    if cmd == "mergekit-multi":
        args += ["--intermediate-dir", str(tmp / "intermediate")]
    run = subprocess.run(
        [*args, "--no-copy-tokenizer", "--quiet"], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return _weights(out)


def test_fold_factors() -> None:
    assert fold_factors([1.0, 2.0, 1.0, 0.5]) == [1.0, 0.5, 0.5, 1.0]
    with pytest.raises(ExportError):
        fold_factors([1.0, 0.0])


def test_export_equals_in_memory_path_with_scales_and_repeats(
    dataflow_models, tmp_path: Path
) -> None:
    sources = {
        "a": PathSource(model=str(dataflow_models.a)),
        "b": PathSource(model=str(dataflow_models.b)),
    }
    steps = [("a", 0), ("b", 1, 0.6), ("b", 1, 1.7), ("a", 2, 1.3), ("a", 3), ("b", 3, 0.8)]
    path = _path(sources, steps)
    out = write_path_checkpoint(path, tmp_path / "out")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 6 and "auto_map" not in cfg
    torch.testing.assert_close(_logits_of(out), _logits_in_memory(path), rtol=1e-4, atol=1e-4)
    # the scales are not a no-op: the unscaled path computes something else
    plain = _path(sources, [s[:2] for s in steps])
    assert (_logits_in_memory(plain) - _logits_in_memory(path)).abs().max() > 1e-2
    w = _weights(out)
    src_b = load_file(str(dataflow_models.b / "model.safetensors"))
    # slot 2 (b[1], cumulative scale 0.6 * 1.7) and unfolded tensors copied as they are
    torch.testing.assert_close(
        w["model.layers.2.mlp.down_proj.weight"],
        src_b["model.layers.1.mlp.down_proj.weight"] / (0.6 * 1.7),
    )
    assert torch.equal(
        w["model.layers.2.self_attn.q_proj.weight"], src_b["model.layers.1.self_attn.q_proj.weight"]
    )
    assert (out / "tokenizer.json").is_file() and (out / "mergekit.yaml").is_file()


def test_tied_embeddings_stay_tied(dataflow_models, tmp_path: Path) -> None:
    sources = {
        "t": PathSource(model=str(dataflow_models.tied)),
        "a": PathSource(model=str(dataflow_models.a)),
    }
    path = _path(sources, [("t", 0), ("a", 1, 0.5), ("t", 3, 2.0)], emb="t")
    out = write_path_checkpoint(path, tmp_path / "out")
    w = _weights(out)
    assert "lm_head.weight" not in w
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is True
    assert torch.equal(
        w["model.embed_tokens.weight"],
        load_file(str(dataflow_models.tied / "model.safetensors"))["model.embed_tokens.weight"],
    )
    torch.testing.assert_close(_logits_of(out), _logits_in_memory(path), rtol=1e-4, atol=1e-4)


def test_mergekit_rebuilds_the_same_weights(dataflow_models, tmp_path: Path) -> None:
    sources = {
        "a": PathSource(model=str(dataflow_models.a)),
        "b": PathSource(model=str(dataflow_models.b)),
        "c": PathSource(model=str(dataflow_models.c)),
    }
    # starts and ends outside the embedding source: mergekit needs its boundary slices
    path = _path(
        sources, [("b", 0), ("b", 1), ("c", 4, 0.7), ("c", 5), ("a", 1, 1.6), ("b", 3, 1.2)]
    )
    out = write_path_checkpoint(path, tmp_path / "ours")
    text = (out / "mergekit.yaml").read_text()
    assert "passthrough" in text and "o_proj" in text and "down_proj" in text
    theirs = _mergekit("mergekit-yaml", out / "mergekit.yaml", tmp_path / "theirs", tmp_path)
    ours = _weights(out)
    assert sorted(theirs) == sorted(ours)
    for name, t in ours.items():
        torch.testing.assert_close(theirs[name], t, rtol=1e-6, atol=0, msg=name)
    assert json.loads((tmp_path / "theirs" / "config.json").read_text())["num_hidden_layers"] == 6


def test_hybrid_with_a_recipe_source(dataflow_models, tmp_path: Path) -> None:
    recipe = MergeRecipe.from_mergekit_dict(
        {
            "models": [
                {"model": str(dataflow_models.a), "parameters": {"weight": 0.3}},
                {"model": str(dataflow_models.b), "parameters": {"weight": 0.7}},
            ],
            "merge_method": "linear",
            "dtype": "float32",
        }
    )
    sources = {"a": PathSource(model=str(dataflow_models.a)), "ps": PathSource(recipe=recipe)}
    path = _path(sources, [("a", 0), ("ps", 1, 0.9), ("ps", 2), ("a", 3, 1.1)])
    out = write_path_checkpoint(path, tmp_path / "ours")
    torch.testing.assert_close(_logits_of(out), _logits_in_memory(path), rtol=1e-4, atol=1e-4)
    a = load_file(str(dataflow_models.a / "model.safetensors"))
    b = load_file(str(dataflow_models.b / "model.safetensors"))
    torch.testing.assert_close(
        _weights(out)["model.layers.2.self_attn.q_proj.weight"],
        0.3 * a["model.layers.2.self_attn.q_proj.weight"]
        + 0.7 * b["model.layers.2.self_attn.q_proj.weight"],
    )
    text = (out / "mergekit.yaml").read_text()
    assert "mergekit-multi" in text and "name: ps" in text
    theirs = _mergekit("mergekit-multi", out / "mergekit.yaml", tmp_path / "theirs", tmp_path)
    for name, t in _weights(out).items():
        torch.testing.assert_close(theirs[name], t, rtol=1e-5, atol=1e-6, msg=name)


def test_bad_exports(dataflow_models, tmp_path: Path) -> None:
    from evomerge.testing.tiny import build_tiny_model

    sources = {"a": PathSource(model=str(dataflow_models.a))}
    with pytest.raises(ExportError, match="no layer 9"):
        write_path_checkpoint(_path(sources, [("a", 9)]), tmp_path / "x")
    wide = build_tiny_model(tmp_path / "wide", seed=1, hidden_size=48)
    sources["w"] = PathSource(model=str(wide))
    with pytest.raises(ConfigError, match="hidden_size"):
        write_path_checkpoint(_path(sources, [("a", 0), ("w", 1)]), tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
