"""After-search analysis: candidates' effective task vectors against each source's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from evomerge.analysis import (
    analyze_candidates,
    analyze_pool,
    format_top_layers,
    write_conflict_outputs,
)
from evomerge.exceptions import ConfigError
from evomerge.pool import ModelPool


@pytest.fixture(scope="module")
def pool(tiny_models: dict[str, Path]) -> ModelPool:
    return ModelPool.open(tiny_models["base"], [tiny_models["ft_a"], tiny_models["ft_b"]])


def test_candidate_equal_to_a_source_reproduces_the_source_pair(pool: ModelPool) -> None:
    # a "merge" that is exactly ft_a: its effective task vector is tau_a, bit for bit
    report = analyze_candidates(pool, {"best": lambda name: pool.source_tensor(0, name)})
    assert report.kind == "candidates" and report.names == ["ft_a", "ft_b", "best"]
    assert report.layout.pairs == [("best", "ft_a"), ("best", "ft_b")]
    w = report.whole_model()
    assert "conflict_fraction_active" not in w  # no joint figures for candidates
    same, other = w["per_pair"]["best|ft_a"], w["per_pair"]["best|ft_b"]
    assert same["cosine"] == pytest.approx(1.0) and same["conflict_coords"] == 0
    assert same["multi_active_coords"] == round(
        w["per_model"]["ft_a"]["nonzero_fraction"] * w["numel"]
    )
    sources = analyze_pool(pool).whole_model()["per_pair"]["ft_a|ft_b"]
    for key in ("cosine", "conflict_fraction_active", "conflict_fraction_all", "conflict_coords"):
        assert other[key] == pytest.approx(sources[key], rel=1e-12), key
    assert other["per_model"]["best"]["cl2"] == pytest.approx(
        sources["per_model"]["ft_a"]["cl2"], rel=1e-12
    )


def test_linear_candidate_against_numpy(pool: ModelPool) -> None:
    def merged(name: str) -> torch.Tensor:
        return 0.7 * pool.source_tensor(0, name) + 0.3 * pool.source_tensor(1, name)

    report = analyze_candidates(pool, {"lin": merged})
    names = pool.tensor_names
    c = np.concatenate([(merged(n) - pool.base_tensor(n)).double().numpy().ravel() for n in names])
    for i, src in enumerate(pool.source_names):
        s = np.concatenate([pool.task_vector(i, n).double().numpy().ravel() for n in names])
        conflict = (c * s) < 0
        both = (c != 0) & (s != 0)
        pair = report.whole_model()["per_pair"][f"lin|{src}"]
        assert pair["cosine"] == pytest.approx(
            c @ s / np.linalg.norm(c) / np.linalg.norm(s), rel=1e-6
        )
        assert pair["conflict_fraction_active"] == pytest.approx(
            conflict.sum() / both.sum(), rel=1e-6
        )
        assert pair["per_model"][src]["cl2"] == pytest.approx(np.linalg.norm(s[conflict]), rel=1e-6)
        assert pair["per_model"]["lin"]["cl2"] == pytest.approx(
            np.linalg.norm(c[conflict]), rel=1e-6
        )


def test_candidate_outputs_and_table(pool: ModelPool, tmp_path: Path) -> None:
    report = analyze_candidates(pool, {"t7": lambda n: pool.source_tensor(1, n)}, density=0.5)
    paths = write_conflict_outputs(report, tmp_path / "conflicts_top")
    s = json.loads(paths["summary"].read_text())
    assert s["kind"] == "candidates" and s["pairs"] == ["t7|ft_a", "t7|ft_b"]
    assert set(paths["heatmaps"]) == {
        "heatmap_conflict_fraction_active.t7__vs__ft_a",
        "heatmap_cosine.t7__vs__ft_a",
        "heatmap_conflict_fraction_active.t7__vs__ft_b",
        "heatmap_cosine.t7__vs__ft_b",
    }
    assert "conflict t7|ft_a" in format_top_layers(report)


def test_candidate_name_clash(pool: ModelPool) -> None:
    with pytest.raises(ConfigError, match=r"\['ft_a'\] clash with source names"):
        analyze_candidates(pool, {"ft_a": lambda n: pool.base_tensor(n)})
