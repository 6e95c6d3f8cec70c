"""In-place copies into a live module: names, shapes, ties, strictness; checkpoint headers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from evomerge.exceptions import GenerationError
from evomerge.generate import copy_named_tensors, weight_targets
from evomerge.generate._weights import check_shapes, checkpoint_shapes


class _Tied(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(5, 3)
        self.proj = torch.nn.Linear(3, 3)
        self.head = torch.nn.Linear(3, 5, bias=False)
        self.head.weight = self.embed.weight
        self.register_buffer("scale", torch.ones(3))
        self.register_buffer("inv_freq", torch.ones(2), persistent=False)


def test_targets_list_aliases_and_persistent_buffers_only() -> None:
    m = _Tied()
    t = weight_targets(m)
    assert set(t) == {"embed.weight", "proj.weight", "proj.bias", "head.weight", "scale"}
    assert t["head.weight"] is t["embed.weight"]


def test_copy_in_place_keeps_identity_and_converts() -> None:
    m = _Tied()
    before = m.proj.weight
    src = torch.arange(9, dtype=torch.float64).reshape(3, 3)
    n = copy_named_tensors(
        weight_targets(m), [("proj.weight", src), ("scale", torch.full((3,), 2.0))]
    )
    assert n == 2
    assert m.proj.weight is before and m.proj.weight.dtype == torch.float32
    assert torch.equal(m.proj.weight.data, src.float())
    assert torch.equal(m.scale, torch.full((3,), 2.0))
    assert m.proj.weight.requires_grad  # still a trainable parameter, not replaced
    copy_named_tensors(weight_targets(m), {"proj.bias": torch.ones(3)})  # a state dict works too
    assert torch.equal(m.proj.bias.data, torch.ones(3))


def test_tied_alias_checked_not_copied_twice() -> None:
    m = _Tied()
    w = torch.randn(5, 3)
    assert (
        copy_named_tensors(weight_targets(m), [("embed.weight", w), ("head.weight", w.clone())])
        == 1
    )
    assert torch.equal(m.head.weight, w)
    with pytest.raises(GenerationError, match=r"'head.weight' is tied to 'embed.weight'"):
        copy_named_tensors(weight_targets(m), [("embed.weight", w), ("head.weight", w + 1)])


def test_strict_lists_missing_but_counts_aliases() -> None:
    m = _Tied()
    t = weight_targets(m)
    full = [(k, v.detach().clone()) for k, v in t.items() if k != "head.weight"]
    copy_named_tensors(t, full, strict=True)
    some = [(k, v) for k, v in full if k in ("embed.weight", "proj.weight")]
    with pytest.raises(GenerationError, match=r"2 tensor\(s\) not given: proj.bias, scale"):
        copy_named_tensors(t, some, strict=True)


def test_unknown_name_suggests_close_match_and_shape_mismatch_names_it() -> None:
    t = weight_targets(_Tied())
    with pytest.raises(
        GenerationError, match=r"unknown tensor 'proj.weigth'.*Did you mean: proj.weight"
    ):
        copy_named_tensors(t, [("proj.weigth", torch.zeros(3, 3))])
    with pytest.raises(
        GenerationError, match=r"'proj.weight' has shape \(3, 4\) but the model's is \(3, 3\)"
    ):
        copy_named_tensors(t, [("proj.weight", torch.zeros(3, 4))])
    assert copy_named_tensors(t, [("model.rotary_emb.inv_freq", torch.zeros(2))]) == 0


def test_checkpoint_shapes_from_headers(tiny_dir: Path, tmp_path: Path) -> None:
    shapes = checkpoint_shapes(tiny_dir)
    assert shapes is not None
    assert shapes["model.norm.weight"] == (32,)
    assert shapes["model.layers.0.self_attn.k_proj.weight"] == (16, 32)  # 2 kv heads x 8
    assert checkpoint_shapes(tmp_path) is None
    ok = list(check_shapes([("model.norm.weight", torch.zeros(32))], shapes))
    assert [n for n, _ in ok] == ["model.norm.weight"]
    with pytest.raises(GenerationError, match=r"model.norm.weight"):
        list(check_shapes([("model.norm.weight", torch.zeros(33))], shapes))
    with pytest.raises(GenerationError, match="unknown tensor 'nope'"):
        list(check_shapes([("nope", torch.zeros(1))], shapes))
