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
