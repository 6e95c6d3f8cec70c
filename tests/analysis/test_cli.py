"""``evomerge conflicts`` end to end: real checkpoints in, the documented files out."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evomerge.analysis import analyze_pool
from evomerge.cli import app
from evomerge.pool import ModelPool


def test_conflicts_command_writes_documented_outputs(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = [
        "conflicts",
        str(tiny_models["base"]),
        str(tiny_models["ft_a"]),
        str(tiny_models["ft_b"]),
        "--out",
        str(out),
        "--density",
        "0.5",
        "--trim-scope",
        "global",
        "--quiet",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Most conflicted layers (of 3):" in result.output
    assert "whole model: conflict(active)" in result.output

    s = json.loads((out / "summary.json").read_text())
    assert (
        s["models"] == ["ft_a", "ft_b"]
        and s["trim"]["scope"] == "global"
        and s["trim"]["density"] == 0.5
    )
    w = s["whole_model"]
    for key in ("conflict_fraction_active", "conflict_fraction_all"):
        assert 0.0 < w[key] < 1.0
    for m in ("ft_a", "ft_b"):
        assert {"l2", "cl2", "cl2_ratio", "ties_discarded_l2"} <= set(w["per_model"][m])
    assert set(s["per_layer"]) == {"0", "1", "2"}
    assert {"q", "k", "v", "o", "gate", "up", "down", "norm", "embed", "lm_head"} <= set(
        s["per_module"]
    )
    # the files agree with the library call
    ref = analyze_pool(
        ModelPool.open(tiny_models["base"], [tiny_models["ft_a"], tiny_models["ft_b"]]),
        density=0.5,
        trim_scope="global",
    )
    assert w["conflict_fraction_active"] == pytest.approx(
        ref.whole_model()["conflict_fraction_active"]
    )

    with (out / "conflicts.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(ref.tensors)
    assert {
        "name",
        "layer",
        "module",
        "numel",
        "conflict_fraction_active",
        "per_model.ft_a.cl2",
        "per_pair.ft_a|ft_b.cosine",
    } <= set(rows[0])
    for stem in s["heatmaps"].values():
        assert (out / stem).read_bytes()[:4] == b"\x89PNG"
    assert "heatmap_conflict_fraction_active.png" in s["heatmaps"].values()


def test_conflicts_command_reports_bad_arguments(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    base, ft = str(tiny_models["base"]), str(tiny_models["ft_a"])
    result = CliRunner().invoke(
        app, ["conflicts", base, ft, "--out", str(tmp_path), "--trim-scope", "layer", "-q"]
    )
    assert result.exit_code == 2
    assert "Available: tensor, global" in result.output
    result = CliRunner().invoke(
        app, ["conflicts", base, str(tmp_path / "missing"), "--out", str(tmp_path), "-q"]
    )
    assert result.exit_code == 2 and "error:" in result.output


def _conflicts(tiny_models: dict[str, Path], out: Path, *extra: str) -> object:
    args = ["conflicts", str(tiny_models["base"]), str(tiny_models["ft_a"])]
    return CliRunner().invoke(
        app, [*args, str(tiny_models["ft_b"]), "--out", str(out), "--quiet", *extra]
    )


def test_conflicts_on_a_full_disk_keep_the_previous_analysis_whole(
    tiny_models: dict[str, Path], small_disk
) -> None:
    """The outputs are replaced atomically: a disk that fills up mid-write leaves the
    previous analysis, complete, and no partial CSV or PNG (one line, exit 2)."""
    disk = small_disk("analysis", "2m")
    out = disk / "conflicts"
    first = _conflicts(tiny_models, out)
    assert first.exit_code == 0, first.output  # type: ignore[attr-defined]
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "conflicts.csv" in before and any(n.endswith(".png") for n in before)
    filler = small_disk.fill(disk)
    second = _conflicts(tiny_models, out, "--density", "0.3")
    output = second.output  # type: ignore[attr-defined]
    assert second.exit_code == 2, output  # type: ignore[attr-defined]
    assert (
        output.startswith(f"error: no space left on the device of {out}")
        and len(output.strip().splitlines()) == 1
    ), output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in disk.iterdir()) == ["conflicts", "filler"]  # no temp folder
    filler.unlink()
    third = _conflicts(tiny_models, out, "--density", "0.3")
    assert third.exit_code == 0 and json.loads((out / "summary.json").read_text())  # type: ignore[attr-defined]


def test_conflicts_refuse_a_folder_holding_other_files(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    result = _conflicts(tiny_models, out)
    assert result.exit_code == 2  # type: ignore[attr-defined]
    assert "notes.txt" in result.output  # type: ignore[attr-defined]
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
