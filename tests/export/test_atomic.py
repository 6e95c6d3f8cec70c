"""Atomic writes: interrupted streams leave nothing; existing directories are protected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from evomerge.exceptions import ExportError
from evomerge.export import write_checkpoint


def _failing_stream(n_ok: int, exc: BaseException):
    for i in range(n_ok):
        yield f"layer.{i}.weight", torch.full((64, 64), float(i))  # 16 KB each
    raise exc


@pytest.mark.parametrize("exc", [RuntimeError("merge blew up"), KeyboardInterrupt()])
def test_interrupted_stream_leaves_no_checkpoint_and_no_temp_dir(exc, tmp_path):
    parent = tmp_path / "parent"
    parent.mkdir()
    (parent / "neighbour.txt").write_text("keep me")
    seen_tmp: list[Path] = []

    def spy_stream():
        for item in _failing_stream(5, exc):
            seen_tmp.extend(p for p in parent.iterdir() if p.name.startswith(".out.tmp-"))
            yield item

    with pytest.raises(type(exc)):
        write_checkpoint(spy_stream(), parent / "out", config={}, base_dir=None, shard_size="20KB")
    assert seen_tmp, "the writer should build the checkpoint in a hidden sibling directory"
    assert sorted(p.name for p in parent.iterdir()) == ["neighbour.txt"]


def test_non_empty_out_dir_is_refused_and_untouched(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("old")
    with pytest.raises(ExportError, match=r"out_dir: .* exists and is not empty.*overwrite=True"):
        write_checkpoint(iter([("a", torch.zeros(2))]), out, config={}, base_dir=None)
    assert [p.name for p in out.iterdir()] == ["precious.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_existing_file_is_refused(tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(ExportError, match="exists and is not a directory"):
        write_checkpoint(
            iter([("a", torch.zeros(2))]),
            tmp_path / "out",
            config={},
            base_dir=None,
            overwrite=True,
        )


def test_empty_out_dir_is_accepted(tmp_path):
    (tmp_path / "out").mkdir()
    out = write_checkpoint(
        iter([("a", torch.zeros(2))]), tmp_path / "out", config={}, base_dir=None
    )
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_overwrite_replaces_only_after_success(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        write_checkpoint(
            _failing_stream(2, RuntimeError("x")), out, config={}, base_dir=None, overwrite=True
        )
    assert [p.name for p in out.iterdir()] == ["old.txt"]  # a failed overwrite keeps the old one

    write_checkpoint(
        iter([("a", torch.ones(3))]), out, config={"vocab_size": 3}, base_dir=None, overwrite=True
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
    ]
    assert json.loads((out / "config.json").read_text())["vocab_size"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no .old-/.tmp- leftovers
