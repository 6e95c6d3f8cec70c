"""The in-memory data-flow path (hf backend) against a model built by copying the same
layers into a standard checkpoint by hand; shared modules; one KV-cache entry per slot."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from evomerge.generate import GenerationParams, HFGenerator
from evomerge.generate._path_model import PathModel
from evomerge.merge import open_path_sources
from evomerge.merge.path import LayerPath, PathSlot, PathSource
from evomerge.testing.tiny import build_tiny_model

PROMPTS = ["hello there", "What is your name?", "a b c d e f g"]
STEPS = [("a", 0), ("b", 1), ("b", 1), ("a", 2), ("b", 0), ("a", 3)]  # b[1] repeats


def _copy_by_hand(models: dict[str, Path], steps: list[tuple[str, int]], out: Path) -> Path:
    """The reference: the layers copied into a plain checkpoint with the safetensors API."""
    shutil.copytree(models["a"], out)
    (out / "model.safetensors").unlink()
    loaded = {n: load_file(str(p / "model.safetensors")) for n, p in models.items()}
    new = {k: v for k, v in loaded["a"].items() if not k.startswith("model.layers.")}
    for k, (src, layer) in enumerate(steps):
        prefix = f"model.layers.{layer}."
        for name, t in loaded[src].items():
            if name.startswith(prefix):
                new[f"model.layers.{k}." + name[len(prefix) :]] = t.clone()
    save_file(new, str(out / "model.safetensors"), metadata={"format": "pt"})
    cfg = json.loads((out / "config.json").read_text())
    cfg["num_hidden_layers"] = len(steps)
    if "layer_types" in cfg:
        cfg["layer_types"] = ["full_attention"] * len(steps)
    (out / "config.json").write_text(json.dumps(cfg))
    return out


def _path(models: dict[str, Path], steps: list[tuple[str, int]]) -> LayerPath:
    return LayerPath(
        sources={n: PathSource(model=str(p)) for n, p in models.items()},
        embedding="a",
        slots=tuple(PathSlot(source=s, layer=i) for s, i in steps),
    )


@pytest.fixture(scope="module", params=["llama", "qwen2", "mistral"])
def family(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    root = tmp_path_factory.mktemp(f"path_{request.param}")
    return {
        n: build_tiny_model(root / n, model_type=request.param, seed=s, initializer_range=0.25)
        for n, s in (("a", 30), ("b", 31))
    }


def test_generation_equals_a_copied_checkpoint(family: dict[str, Path], tmp_path: Path) -> None:
    pm = PathModel.build(open_path_sources(_path(family, STEPS).sources), embedding="a")
    pm.set_path(_path(family, STEPS))
    ref_dir = _copy_by_hand(family, STEPS, tmp_path / "ref")
    ref = HFGenerator.from_pretrained(ref_dir, device="cpu", dtype="float32")
    tok = ref.tokenizer
    mine = HFGenerator(model=pm.model, tokenizer=tok)
    params = GenerationParams(max_new_tokens=12, batch_size=2)
    assert mine.generate(PROMPTS, params) == ref.generate(PROMPTS, params)
    ids = tok(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        got = pm.model(**ids).logits
        want = ref.model(**ids).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # scoring reads the same weights
    assert mine.score_texts(PROMPTS) == pytest.approx(ref.score_texts(PROMPTS), rel=1e-5)


def test_repeated_layers_share_weights_and_slots_have_their_own_cache(
    dataflow_models, tmp_path: Path
) -> None:
    models = {"a": dataflow_models.a, "b": dataflow_models.b}
    pm = PathModel.build(open_path_sources(_path(models, STEPS).sources), embedding="a")
    bank_ptrs = {
        p.data_ptr() for layers in pm.bank.values() for m in layers for p in m.parameters()
    }
    pm.set_path(_path(models, STEPS))
    slots = pm.model.model.layers
    assert slots[1].layer is slots[2].layer is pm.bank["b"][1]  # one module, two slots
    layer_ptrs = {p.data_ptr() for p in slots.parameters()}
    assert layer_ptrs <= bank_ptrs  # no weight copied for the path
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        out = pm.model(input_ids=ids, use_cache=True)
    cache = out.past_key_values
    assert len(cache.layers) == len(STEPS)
    k1, k2 = cache.layers[1].keys, cache.layers[2].keys
    assert k1.shape == k2.shape and not torch.equal(k1, k2)  # same layer, different inputs


def test_rewiring_matches_a_fresh_build(dataflow_models) -> None:
    models = {"a": dataflow_models.a, "b": dataflow_models.b}
    short = [("b", 0), ("a", 3)]
    pm = PathModel.build(open_path_sources(_path(models, STEPS).sources), embedding="a")
    pm.set_path(_path(models, STEPS))
    pm.set_path(_path(models, short))
    fresh = PathModel.build(open_path_sources(_path(models, short).sources), embedding="a")
    fresh.set_path(_path(models, short))
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        torch.testing.assert_close(
            pm.model(input_ids=ids).logits, fresh.model(input_ids=ids).logits
        )
    assert pm.model.config.num_hidden_layers == 2


def test_path_of_another_embedding_or_missing_layer_is_refused(dataflow_models) -> None:
    from evomerge.exceptions import GenerationError

    models = {"a": dataflow_models.a, "b": dataflow_models.b}
    pm = PathModel.build(open_path_sources(_path(models, STEPS).sources), embedding="a")
    bad = LayerPath(
        sources=_path(models, STEPS).sources, embedding="b", slots=(PathSlot(source="a", layer=0),)
    )
    with pytest.raises(GenerationError, match="embeddings of 'b'"):
        pm.set_path(bad)
    with pytest.raises(GenerationError, match="no layer 7"):
        pm.set_path(_path(models, [("a", 7)]))
