"""Layer index and module type of real tensor names, per architecture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors import safe_open

from evomerge.pool import MODULE_TYPES, ModelPool, classify_tensor, is_vocab_tensor, vocab_role
from evomerge.testing.tiny import build_tiny_model, perturb_model

NUM_LAYERS = 3

# What each module (the name's last component before .weight/.bias) must be classified as.
LLAMA_LIKE = {
    "q_proj": "q",
    "k_proj": "k",
    "v_proj": "v",
    "o_proj": "o",
    "gate_proj": "gate",
    "up_proj": "up",
    "down_proj": "down",
    "input_layernorm": "norm",
    "post_attention_layernorm": "norm",
    "norm": "norm",
    "embed_tokens": "embed",
    "lm_head": "lm_head",
}
GPT2 = {
    "attn.c_attn": "qkv",
    "attn.c_proj": "o",
    "mlp.c_fc": "mlp_in",
    "mlp.c_proj": "mlp_out",
    "ln_1": "norm",
    "ln_2": "norm",
    "ln_f": "norm",
    "wte": "embed",
    "wpe": "embed",
}
GPT_NEOX = {
    "attention.query_key_value": "qkv",
    "attention.dense": "o",
    "mlp.dense_h_to_4h": "mlp_in",
    "mlp.dense_4h_to_h": "mlp_out",
    "input_layernorm": "norm",
    "post_attention_layernorm": "norm",
    "final_layer_norm": "norm",
    "embed_in": "embed",
    "embed_out": "lm_head",
}
EXPECTED = {
    "gpt_neox": GPT_NEOX,
    "llama": LLAMA_LIKE,
    "mistral": LLAMA_LIKE,
    "qwen2": LLAMA_LIKE,
    "gemma": LLAMA_LIKE,
    "gpt2": GPT2,
}


def _expected_module(model_type: str, name: str) -> str:
    stem = name.rsplit(".", 1)[0]  # drop .weight / .bias
    table = EXPECTED[model_type]
    matches = [v for k, v in table.items() if stem == k or stem.endswith("." + k)]
    assert len(matches) == 1, f"test table does not cover {name!r}"
    return matches[0]


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def arch_model(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    model_type = request.param
    out = tmp_path_factory.mktemp(f"arch_{model_type}") / "model"
    return model_type, build_tiny_model(
        out, model_type=model_type, num_layers=NUM_LAYERS, tokenizer=False
    )


def test_every_real_tensor_name_gets_its_module_and_layer(arch_model: tuple[str, Path]) -> None:
    model_type, path = arch_model
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        names = list(f.keys())
    assert names
    layers_seen = set()
    for name in names:
        layer, module = classify_tensor(name)
        assert module in MODULE_TYPES
        assert module == _expected_module(model_type, name), name
        in_stack = ".layers." in name or ".h." in name
        assert (layer is not None) == in_stack, name
        if layer is not None:
            assert f".{layer}." in name
            layers_seen.add(layer)
    assert layers_seen == set(range(NUM_LAYERS))


def test_pool_layer_count_comes_from_config_and_matches_names(
    arch_model: tuple[str, Path], tmp_path: Path
) -> None:
    _, path = arch_model
    ft = perturb_model(path, tmp_path / "ft", seed=5)
    pool = ModelPool.open(path, [ft])
    assert pool.num_layers == NUM_LAYERS
    assert {pool.info(n).layer for n in pool.tensor_names} - {None} == set(range(NUM_LAYERS))
    cfg = json.loads((path / "config.json").read_text())
    tied = cfg.get("tie_word_embeddings", True)
    # Tied models store no lm_head (GPT-2); untied ones do.
    heads = [n for n in pool.tensor_names if vocab_role(n) == "head"]
    assert bool(heads) == (not tied)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("model.layers.7.block_sparse_moe.experts.3.w1.weight", (7, "gate")),
        ("model.layers.7.block_sparse_moe.experts.3.w2.weight", (7, "down")),
        ("model.layers.7.block_sparse_moe.experts.3.w3.weight", (7, "up")),
        ("model.layers.7.block_sparse_moe.gate.weight", (7, "other")),
        ("gpt_neox.layers.2.attention.query_key_value.weight", (2, "qkv")),
        ("gpt_neox.layers.2.attention.dense.weight", (2, "o")),
        ("gpt_neox.layers.2.mlp.dense_h_to_4h.weight", (2, "mlp_in")),
        ("gpt_neox.layers.2.mlp.dense_4h_to_h.bias", (2, "mlp_out")),
        ("gpt_neox.embed_in.weight", (None, "embed")),
        ("embed_out.weight", (None, "lm_head")),
        ("model.layers.12.self_attn.q_norm.weight", (12, "norm")),
        ("model.layers.1.self_attn.qkv_proj.weight", (1, "qkv")),
        ("model.layers.1.mlp.gate_up_proj.weight", (1, "mlp_in")),
        ("h.4.attn.c_attn.weight", (4, "qkv")),
        ("blocks.10.mlp.fc1.weight", (10, "mlp_in")),
        ("blocks.10.mlp.fc2.weight", (10, "mlp_out")),
        ("output.weight", (None, "lm_head")),
        ("model.rotary_emb.inv_freq", (None, "other")),
    ],
)
def test_classify_generic_names(name: str, expected: tuple[int | None, str]) -> None:
    assert classify_tensor(name) == expected


@pytest.mark.parametrize(
    ("name", "vocab"),
    [
        ("model.embed_tokens.weight", True),
        ("lm_head.weight", True),
        ("transformer.wte.weight", True),
        ("gpt_neox.embed_in.weight", True),  # GPT-NeoX / Pythia
        ("embed_out.weight", True),
        ("tok_embeddings.weight", True),  # Meta's original naming
        ("output.weight", True),
        ("model.layers.0.mlp.embed_in.weight", False),  # inside a layer: not the vocabulary
        ("transformer.wpe.weight", False),
        ("model.norm.weight", False),
        ("model.layers.0.self_attn.q_proj.weight", False),
    ],
)
def test_vocab_tensors_are_token_embeddings_and_heads(name: str, vocab: bool) -> None:
    assert is_vocab_tensor(name) is vocab


def test_vocab_tensors_of_every_real_architecture_are_found(arch_model: tuple[str, Path]) -> None:
    """The tensors named as vocabulary tensors (the one list in evomerge.pool) are exactly
    the 2-D tensors with vocab_size rows, in each real tiny model (GPT-NeoX's embed_in and
    Meta's tok_embeddings were each missing from one of two lists once)."""
    model_type, path = arch_model
    vocab = json.loads((path / "config.json").read_text())["vocab_size"]
    shapes = {}
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        for name in f.keys():  # noqa: SIM118 (safe_open is not a Mapping)
            shapes[name] = tuple(f.get_slice(name).get_shape())
    # [vocab, hidden] outside the layer stack (a packed qkv may have vocab_size rows too)
    by_shape = {
        n
        for n, shape in shapes.items()
        if len(shape) == 2 and shape[0] == vocab and ".layers." not in n
    }
    by_name = {n for n in shapes if is_vocab_tensor(n)}
    assert by_name == by_shape, model_type
    assert {vocab_role(n) for n in by_name} >= {"embed"}
