"""write_checkpoint: sharding, dtype, config/tokenizer files, tied embeddings, loading."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from evomerge.exceptions import ExportError
from evomerge.export import MERGE_CONFIG_NAME, write_checkpoint


def _config(model_dir: Path) -> dict:
    return json.loads((model_dir / "config.json").read_text())


def _stream(weights: dict[str, torch.Tensor]) -> Iterator[tuple[str, torch.Tensor]]:
    yield from weights.items()


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def test_sharded_output_has_hf_names_index_and_equal_tensors(tiny_models, read_weights, tmp_path):
    base = tiny_models["base"]
    weights = read_weights(base)
    total = sum(_nbytes(t) for t in weights.values())
    limit = 30_000  # bytes; the tiny model is ~100 KB, its largest tensor 12 KB
    out = write_checkpoint(
        _stream(weights), tmp_path / "out", config=_config(base), base_dir=base, shard_size=limit
    )

    shards = sorted(p.name for p in out.glob("*.safetensors"))
    n = len(shards)
    assert n >= 3
    assert shards == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == total
    assert set(index["weight_map"]) == set(weights)
    for shard in shards:
        with safe_open(str(out / shard), framework="pt") as f:
            keys = list(f.keys())
            assert f.metadata() == {"format": "pt"}
            assert all(index["weight_map"][k] == shard for k in keys)
            size = sum(_nbytes(f.get_tensor(k)) for k in keys)
            assert size <= limit or len(keys) == 1
    got = read_weights(out)
    assert got.keys() == weights.keys()
    for name, t in weights.items():
        assert torch.equal(got[name], t), name
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no provisional names left


def test_single_shard_is_one_model_safetensors_without_index(tiny_models, read_weights, tmp_path):
    base = tiny_models["base"]
    weights = read_weights(base)
    out = write_checkpoint(_stream(weights), tmp_path / "out", config=_config(base), base_dir=base)
    assert sorted(p.name for p in out.glob("model*")) == ["model.safetensors"]
    got = read_weights(out)
    assert all(torch.equal(got[k], v) for k, v in weights.items()) and got.keys() == weights.keys()


def test_a_tensor_larger_than_the_shard_size_gets_its_own_shard(tmp_path):
    tensors = [("a", torch.zeros(10)), ("big", torch.ones(1000)), ("c", torch.full((10,), 2.0))]
    out = write_checkpoint(
        iter(tensors), tmp_path / "out", config={}, base_dir=None, shard_size="1KB"
    )
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == {
        "a": "model-00001-of-00003.safetensors",
        "big": "model-00002-of-00003.safetensors",
        "c": "model-00003-of-00003.safetensors",
    }
    assert index["metadata"]["total_size"] == 4 * 1020


def test_out_dtype_casts_floating_tensors_and_sets_config_dtype(
    tiny_models, read_weights, tmp_path
):
    base = tiny_models["base"]
    weights = read_weights(base)
    weights_plus_int = {**weights, "extra.counter": torch.arange(5, dtype=torch.int64)}
    cfg = _config(base)
    assert cfg["dtype"] == "float32"
    out = write_checkpoint(
        _stream(weights_plus_int),
        tmp_path / "out",
        config={**cfg, "torch_dtype": "float32"},
        base_dir=base,
        out_dtype=torch.bfloat16,
    )
    got = read_weights(out)
    for name, t in weights.items():
        assert got[name].dtype == torch.bfloat16
        assert torch.equal(got[name], t.to(torch.bfloat16)), name
    assert got["extra.counter"].dtype == torch.int64  # integer tensors are never cast
    written = _config(out)
    assert written["dtype"] == "bfloat16" and written["torch_dtype"] == "bfloat16"


def test_config_dtype_follows_the_tensors_when_no_out_dtype(tiny_models, read_weights, tmp_path):
    base = tiny_models["base"]
    halves = {k: v.half() for k, v in read_weights(base).items()}
    cfg = {k: v for k, v in _config(base).items() if k != "dtype"}
    out = write_checkpoint(_stream(halves), tmp_path / "out", config=cfg, base_dir=base)
    assert _config(out)["torch_dtype"] == "float16"


def test_config_generation_config_and_tokenizer_come_from_the_base(
    tiny_models, read_weights, tmp_path
):
    from transformers import AutoTokenizer

    base = tiny_models["base"]
    out = write_checkpoint(
        _stream(read_weights(base)),
        tmp_path / "out",
        config=_config(base),
        base_dir=base,
        merge_config_yaml="merge_method: linear\n",
        extra_files={"README.md": "# card\n", "notes/x.bin": b"\x00\x01"},
    )
    assert _config(out) == _config(base)  # same dtype and vocab: nothing to change
    for name in (
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    ):
        assert (base / name).is_file(), name
        assert (out / name).read_bytes() == (base / name).read_bytes(), name
    assert (out / MERGE_CONFIG_NAME).read_text() == "merge_method: linear\n"
    assert (out / "README.md").read_text() == "# card\n"
    assert (out / "notes" / "x.bin").read_bytes() == b"\x00\x01"
    tok_base, tok_out = (
        AutoTokenizer.from_pretrained(str(base)),
        AutoTokenizer.from_pretrained(str(out)),
    )
    assert tok_out("Hello, world!")["input_ids"] == tok_base("Hello, world!")["input_ids"]
    assert tok_out.chat_template == tok_base.chat_template


def test_minimal_generation_config_without_base(tiny_models, read_weights, tmp_path):
    base = tiny_models["base"]
    out = write_checkpoint(
        _stream(read_weights(base)), tmp_path / "out", config=_config(base), base_dir=None
    )
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen == {
        "_from_model_config": True,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 0,
    }
    assert not (out / "tokenizer.json").exists()


def test_vocab_size_follows_cropped_embeddings(tiny_models, read_weights, tmp_path):
    from transformers import AutoModelForCausalLM

    base = tiny_models["base"]
    weights = read_weights(base)
    vocab = _config(base)["vocab_size"]
    cropped = {
        k: (v[: vocab - 16] if k.endswith(("embed_tokens.weight", "lm_head.weight")) else v)
        for k, v in weights.items()
    }
    out = write_checkpoint(_stream(cropped), tmp_path / "out", config=_config(base), base_dir=base)
    assert _config(out)["vocab_size"] == vocab - 16
    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert model.get_input_embeddings().weight.shape[0] == vocab - 16


@pytest.mark.parametrize(
    ("embed", "head"),
    [
        ("model.embed_tokens.weight", "lm_head.weight"),  # Llama, Mistral, Qwen2, Gemma
        ("transformer.wte.weight", None),  # GPT-2 (tied)
        ("transformer.word_embeddings.weight", "lm_head.weight"),  # BLOOM, Falcon
        ("gpt_neox.embed_in.weight", "embed_out.weight"),  # GPT-NeoX, Pythia
        ("tok_embeddings.weight", "output.weight"),  # Meta's original checkpoints
    ],
)
def test_vocab_size_is_read_from_every_family_s_embedding(embed, head, tmp_path):
    """The written config's vocab_size is the embedding's (else the head's) row count, for
    each model family's names (the export once missed tok_embeddings)."""
    rows, hidden = 80, 8
    weights = {embed: torch.zeros(rows, hidden), "layers.0.attention.wq.weight": torch.zeros(8, 8)}
    if head is not None:
        weights[head] = torch.zeros(rows, hidden)
    out = write_checkpoint(
        _stream(weights), tmp_path / "out", config={"vocab_size": 96}, base_dir=None
    )
    assert _config(out)["vocab_size"] == rows
    # the head alone also sets it (an embedding-less stream is unusual but legal)
    if head is not None:
        alone = {head: torch.zeros(rows - 1, hidden)}
        out2 = write_checkpoint(
            _stream(alone), tmp_path / "o2", config={"vocab_size": 96}, base_dir=None
        )
        assert _config(out2)["vocab_size"] == rows - 1


def test_tied_embeddings_get_no_invented_lm_head_and_load(tied_model, read_weights, tmp_path):
    from transformers import AutoModelForCausalLM

    weights = read_weights(tied_model)
    assert "lm_head.weight" not in weights
    out = write_checkpoint(
        _stream(weights),
        tmp_path / "out",
        config=_config(tied_model),
        base_dir=tied_model,
        shard_size="20KB",
    )
    assert (
        "lm_head.weight"
        not in json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    )
    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert torch.equal(model.lm_head.weight, weights["model.embed_tokens.weight"])


def test_tensors_sharing_storage_are_written(tmp_path):
    flat = torch.arange(24, dtype=torch.float32)
    tensors = [
        ("a", flat[:12].view(3, 4)),
        ("b", flat[12:]),
        ("a_again", flat[:12]),
    ]  # b is disjoint, a_again aliases a
    out = write_checkpoint(iter(tensors), tmp_path / "out", config={}, base_dir=None)
    from safetensors.torch import load_file

    got = load_file(str(out / "model.safetensors"))
    assert torch.equal(got["a"], flat[:12].view(3, 4))
    assert torch.equal(got["b"], flat[12:])
    assert torch.equal(got["a_again"], flat[:12])


def test_written_checkpoint_loads_and_matches_the_source_model(tiny_models, read_weights, tmp_path):
    from transformers import AutoModelForCausalLM

    base = tiny_models["base"]
    out = write_checkpoint(
        _stream(read_weights(base)),
        tmp_path / "out",
        config=_config(base),
        base_dir=base,
        shard_size="40KB",
    )
    assert (out / "model.safetensors.index.json").is_file()
    ids = torch.tensor([[1, 5, 9, 17, 33]])
    with torch.no_grad():
        ref = AutoModelForCausalLM.from_pretrained(str(base))(ids).logits
        got = AutoModelForCausalLM.from_pretrained(str(out))(ids).logits
    assert torch.equal(got, ref)


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        ([("a", torch.zeros(2)), ("a", torch.ones(2))], "given twice"),
        ([("a", [1.0, 2.0])], "expected a torch.Tensor"),
        ([("a", torch.zeros(2), "x")], "expected (name, tensor) pairs"),
        ([], "no tensors"),
    ],
)
def test_bad_streams_are_export_errors(tensors, message, tmp_path):
    with pytest.raises(ExportError, match=re.escape(message)):
        write_checkpoint(iter(tensors), tmp_path / "out", config={}, base_dir=None)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"extra_files": {"config.json": "{}"}}, "extra_files: 'config.json'"),
        ({"extra_files": {"model.safetensors": b""}}, "extra_files: 'model.safetensors'"),
        ({"extra_files": {"../escape.txt": "x"}}, "must be a relative path"),
        ({"shard_size": "5XB"}, "shard_size: cannot parse '5XB'"),
        ({"out_dtype": torch.int8}, "out_dtype: expected a floating dtype"),
        (
            {"base_dir": Path("/nonexistent/base")},
            "base_dir: '/nonexistent/base' is not a directory",
        ),
    ],
)
def test_bad_arguments_fail_before_consuming_the_stream(kwargs, message, tmp_path):
    consumed = []

    def stream():
        consumed.append(True)
        yield "a", torch.zeros(2)

    args = {"config": {}, "base_dir": None, **kwargs}
    with pytest.raises(ExportError, match=re.escape(message)):
        write_checkpoint(stream(), tmp_path / "out", **args)
    assert not consumed
    assert list(tmp_path.iterdir()) == []
