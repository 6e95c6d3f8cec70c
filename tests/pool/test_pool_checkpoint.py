"""Checkpoint: single vs sharded safetensors, dtypes, pickle policy, error messages."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from evomerge.exceptions import CheckpointError, UnsafeCheckpointError
from evomerge.pool import Checkpoint
from evomerge.testing.tiny import build_tiny_model


def _read_all(model_dir: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


@pytest.fixture(scope="module")
def sharded(tiny_models, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session base model, saved again in shards of at most 20 kB."""
    return build_tiny_model(
        tmp_path_factory.mktemp("sharded") / "base", seed=0, max_shard_size="20KB"
    )


def test_single_and_sharded_give_identical_tensors(tiny_models, sharded: Path) -> None:
    assert (sharded / "model.safetensors.index.json").is_file()
    assert len(list(sharded.glob("*.safetensors"))) > 1
    single, shards = Checkpoint.open(tiny_models.base), Checkpoint.open(sharded)
    assert single.names == shards.names
    reference = _read_all(tiny_models.base)
    assert set(single.names) == set(reference)
    for name in single.names:
        assert single.shape(name) == shards.shape(name) == tuple(reference[name].shape)
        assert torch.equal(single.get(name), reference[name])
        assert torch.equal(shards.get(name), reference[name])


def test_names_are_in_natural_layer_order(tmp_path: Path) -> None:
    ck = Checkpoint.open(build_tiny_model(tmp_path / "m", seed=0, num_layers=12, tokenizer=False))
    layers = [int(n.split(".")[2]) for n in ck.names if n.startswith("model.layers.")]
    assert layers == sorted(layers) and layers[-1] == 11


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_dtypes_are_reported_and_read_exactly(dtype: torch.dtype, tmp_path: Path) -> None:
    path = build_tiny_model(tmp_path / "m", seed=3, dtype=dtype, num_layers=2, tokenizer=False)
    ck = Checkpoint.open(path)
    reference = _read_all(path)
    for name in ck.names:
        assert ck.dtype(name) == dtype
        raw = ck.get(name)
        assert raw.dtype == dtype and torch.equal(raw, reference[name])
        up = ck.get(name, dtype=torch.float32)
        assert up.dtype == torch.float32 and torch.equal(up, reference[name].float())


def test_handles_are_cached_and_pickling_drops_them(tiny_models) -> None:
    ck = Checkpoint.open(tiny_models.base)
    name = ck.names[0]
    first = ck.get(name)
    handle = ck._files[0]._handle
    assert handle is not None
    ck.get(ck.names[1])
    assert ck._files[0]._handle is handle  # one safe_open per file, reused
    clone = pickle.loads(pickle.dumps(ck))
    assert clone._files[0]._handle is None
    assert torch.equal(clone.get(name), first)
    assert name in clone and "nope.weight" not in clone


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist") as err:
        Checkpoint.open(tmp_path / "absent")
    assert str(tmp_path / "absent") in str(err.value)


def test_directory_without_weights(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(
        CheckpointError, match=r"no weights found; expected model\.safetensors"
    ) as err:
        Checkpoint.open(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_index_naming_a_missing_shard(sharded: Path, tmp_path: Path) -> None:
    broken = shutil.copytree(sharded, tmp_path / "broken")
    shard = sorted(broken.glob("*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(CheckpointError) as err:
        Checkpoint.open(broken)
    assert shard.name in str(err.value) and str(shard) in str(err.value)
    assert "model.safetensors.index.json" in str(err.value)


def test_index_mapping_a_tensor_to_the_wrong_shard(sharded: Path, tmp_path: Path) -> None:
    broken = shutil.copytree(sharded, tmp_path / "broken")
    index_path = broken / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    shards = sorted(set(index["weight_map"].values()))
    name = next(n for n, s in index["weight_map"].items() if s == shards[0])
    index["weight_map"][name] = shards[1]
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=rf"maps tensor '{name}' to '{shards[1]}'"):
        Checkpoint.open(broken)


def test_adapter_directory_is_not_a_checkpoint(tiny_models) -> None:
    with pytest.raises(CheckpointError, match="LoRA adapter"):
        Checkpoint.open(tiny_models.lora_a)


def test_pickle_is_refused_then_loaded_with_allow_pickle(tiny_models, tmp_path: Path) -> None:
    reference = _read_all(tiny_models.base)
    target = tmp_path / "pt"
    target.mkdir()
    shutil.copy(tiny_models.base / "config.json", target / "config.json")
    torch.save(reference, target / "pytorch_model.bin")
    with pytest.raises(UnsafeCheckpointError, match="allow_pickle=True") as err:
        Checkpoint.open(target)
    assert "pytorch_model.bin" in str(err.value)
    # the way to opt in for each way of calling: run.yaml, the commands that have the flag
    assert "`models.allow_pickle: true` in run.yaml (search)" in str(err.value)
    assert "--allow-pickle (evomerge merge / conflicts)" in str(err.value)
    ck = Checkpoint.open(target, allow_pickle=True)
    assert ck.is_pickle and set(ck.names) == set(reference)
    for name in ck.names:
        assert torch.equal(ck.get(name), reference[name])


def test_pickle_with_code_is_rejected_even_when_allowed(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    (tmp_path / "config.json").write_text("{}")
    with open(tmp_path / "model.pt", "wb") as f:
        torch.save({"w": Payload()}, f)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        Checkpoint.open(tmp_path, allow_pickle=True)


def test_unindexed_multi_file_checkpoint_rejects_duplicates(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    save_file(
        {"a.weight": torch.zeros(2), "b.weight": torch.ones(3)}, str(tmp_path / "part1.safetensors")
    )
    save_file({"c.weight": torch.ones(1)}, str(tmp_path / "part2.safetensors"))
    ck = Checkpoint.open(tmp_path)
    assert ck.names == ["a.weight", "b.weight", "c.weight"] and ck.shape("b.weight") == (3,)
    save_file({"a.weight": torch.ones(2)}, str(tmp_path / "part3.safetensors"))
    with pytest.raises(CheckpointError, match=r"'a\.weight' is stored twice"):
        Checkpoint.open(tmp_path)


def test_corrupt_header_is_a_checkpoint_error(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(
        b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all"
    )
    with pytest.raises(CheckpointError, match="corrupt safetensors header"):
        Checkpoint.open(tmp_path)
