"""conflicts.csv, summary.json, heatmaps and the printed table, from a hand-computed report."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from evomerge.analysis import analyze_conflicts, format_top_layers, write_conflict_outputs
from evomerge.exceptions import ExportError

from .test_definitions import INFOS, T1, T2, Info, providers


def report():  # type: ignore[no-untyped-def]
    return analyze_conflicts(["t1", "t2"], INFOS, providers({"t1": T1, "t2": T2}))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return write_conflict_outputs(report(), tmp_path_factory.mktemp("conflicts_out"))


def test_csv_has_one_row_per_tensor_with_every_figure(paths: dict[str, Any]) -> None:
    with paths["csv"].open() as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["t1", "t2"]
    t1 = rows[0]
    assert (t1["layer"], t1["module"], t1["numel"]) == ("0", "q", "6")
    assert float(t1["conflict_fraction_active"]) == pytest.approx(0.75)
    assert float(t1["per_model.a.cl2"]) == pytest.approx(math.sqrt(14))
    assert float(t1["per_model.b.ties_discarded_l2"]) == pytest.approx(1.0)
    assert float(t1["per_pair.a|b.cosine"]) == pytest.approx(-7 / (5 * math.sqrt(15)))
    assert float(t1["per_pair.a|b.per_model.b.cl2"]) == pytest.approx(math.sqrt(17))
    # c is all zero in t2: its ratios have no denominator and are left empty
    assert rows[1]["per_model.c.cl2_ratio"] == "" and rows[1]["per_pair.a|c.cosine"] == ""


def test_summary_json_documented_keys(paths: dict[str, Any]) -> None:
    s = json.loads(paths["summary"].read_text())
    assert s["kind"] == "models" and s["models"] == ["a", "b", "c"]
    assert s["trim"] == {"density": None, "scope": None, "global_thresholds": None}
    w = s["whole_model"]
    assert w["conflict_fraction_active"] == pytest.approx(4 / 6)
    assert w["conflict_fraction_all"] == pytest.approx(4 / 8)
    for m in "abc":
        assert {"l2", "cl2", "cl2_ratio", "ties_discarded_l2"} <= set(w["per_model"][m])
    assert set(s["per_layer"]) == {"0", "1"}
    assert set(s["per_module"]) == {"q", "down"}
    assert s["per_layer_module"]["1"]["down"]["conflict_fraction_active"] == pytest.approx(0.5)
    assert s["per_layer"]["1"]["per_model"]["c"]["cl2_ratio"] is None  # JSON null, not NaN


def test_heatmaps_are_pngs_one_per_figure(paths: dict[str, Any]) -> None:
    expected = {
        "heatmap_conflict_fraction_active",
        "heatmap_conflict_fraction_all",
        "heatmap_cl2_ratio.a",
        "heatmap_cl2_ratio.b",
        "heatmap_cl2_ratio.c",
        "heatmap_cosine.a__vs__b",
        "heatmap_cosine.a__vs__c",
        "heatmap_cosine.b__vs__c",
    }
    assert set(paths["heatmaps"]) == expected
    for p in paths["heatmaps"].values():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    s = json.loads(paths["summary"].read_text())
    assert (
        s["heatmaps"]["heatmap_conflict_fraction_active"] == "heatmap_conflict_fraction_active.png"
    )


def test_top_layers_table() -> None:
    text = format_top_layers(report(), n=1)
    lines = text.splitlines()
    assert lines[0] == "Most conflicted layers (of 2):"
    assert "conflict(active)" in lines[1] and "cl2/l2 a" in lines[1]
    assert lines[2].split()[:3] == ["0", "0.750", "0.500"]  # layer 0 beats layer 1 (0.5)
    assert lines[-1] == "whole model: conflict(active) 0.667, conflict(all) 0.500"


def test_no_overlap_says_so() -> None:
    only = analyze_conflicts(
        ["t"],
        {"t": Info(0, "q")},
        {"a": lambda t: torch.tensor([1.0, 0.0]), "b": lambda t: torch.tensor([0.0, 1.0])},
    )
    assert "nothing conflicts" in format_top_layers(only)


def test_unwritable_directory_is_export_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ExportError, match="cannot create a directory next to"):
        write_conflict_outputs(report(), blocker / "out")
