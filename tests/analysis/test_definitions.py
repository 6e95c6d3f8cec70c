"""Every definition on tiny hand-computed task vectors (no files: providers are dicts)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from evomerge.analysis import analyze_conflicts
from evomerge.exceptions import ArchitectureMismatchError, CheckpointError, ConfigError


@dataclass(frozen=True)
class Info:
    layer: int | None
    module: str


# Three models, two tensors. T1 (layer 0, q):
#   p:    0   1   2   3   4   5
#   a:    1   2   0  -1   0   3
#   b:   -1   2   0  -2   0  -4
#   c:    0  -1   0   0   5   0
# |A_p| = 2, 3, 0, 2, 1, 2; conflicts at p = 0, 1, 5; multi-active at 0, 1, 3, 5.
# T2 (layer 1, down): a = [2, -2], b = [-2, -2], c = [0, 0]: conflict at 0; multi 0, 1.
T1 = {"a": [1.0, 2, 0, -1, 0, 3], "b": [-1.0, 2, 0, -2, 0, -4], "c": [0.0, -1, 0, 0, 5, 0]}
T2 = {"a": [2.0, -2], "b": [-2.0, -2], "c": [0.0, 0]}
INFOS = {"t1": Info(0, "q"), "t2": Info(1, "down")}


def providers(tensors: dict[str, dict[str, list[float]]]) -> dict[str, object]:
    names = next(iter(tensors.values())).keys()
    return {v: (lambda t, v=v: torch.tensor(tensors[t][v])) for v in names}


def analyze(**kw: object):  # type: ignore[no-untyped-def]
    return analyze_conflicts(["t1", "t2"], INFOS, providers({"t1": T1, "t2": T2}), **kw)  # type: ignore[arg-type]


def test_tensor_figures_hand_computed() -> None:
    r = analyze()
    f = r.tensor_figures(0)
    assert f["numel"] == 6
    assert f["conflict_coords"] == 3 and f["multi_active_coords"] == 4
    assert f["conflict_fraction_active"] == pytest.approx(3 / 4)
    assert f["conflict_fraction_all"] == pytest.approx(3 / 6)
    a, b, c = (f["per_model"][v] for v in "abc")
    assert (
        a["l2"] == pytest.approx(math.sqrt(15))
        and b["l2"] == pytest.approx(5.0)
        and c["l2"] == pytest.approx(math.sqrt(26))
    )
    # CL2 over conflict coordinates 0, 1, 5
    assert a["cl2"] == pytest.approx(math.sqrt(1 + 4 + 9))
    assert b["cl2"] == pytest.approx(math.sqrt(1 + 4 + 16))
    assert c["cl2"] == pytest.approx(1.0)
    assert a["cl2_ratio"] == pytest.approx(math.sqrt(14 / 15))
    # elected signs (sum >= 0 elects +): +, +, +, -, +, -  (p0 sums to 0 and elects +)
    assert a["ties_discarded_l2"] == pytest.approx(3.0)  # a=3 at p5 against -
    assert b["ties_discarded_l2"] == pytest.approx(1.0)  # b=-1 at p0 against the zero-sum +
    assert c["ties_discarded_l2"] == pytest.approx(1.0)  # c=-1 at p1
    assert a["ties_discarded_ratio"] == pytest.approx(3 / math.sqrt(15))
    assert a["unchanged_fraction"] == pytest.approx(2 / 6) and c[
        "unchanged_fraction"
    ] == pytest.approx(4 / 6)
    assert a["l2_untrimmed"] == pytest.approx(a["l2"]) and a["nonzero_fraction"] == pytest.approx(
        4 / 6
    )
    ab, ac, bc = (f["per_pair"][k] for k in ("a|b", "a|c", "b|c"))
    assert ab["cosine"] == pytest.approx(-7 / (math.sqrt(15) * 5))
    assert ab["abs_cosine"] == pytest.approx(7 / (math.sqrt(15) * 5))
    assert ac["cosine"] == pytest.approx(-2 / (math.sqrt(15) * math.sqrt(26)))
    assert bc["cosine"] == pytest.approx(-2 / (5 * math.sqrt(26)))
    # the pair a|b alone: both active at 0, 1, 3, 5; opposed at 0 and 5
    assert ab["multi_active_coords"] == 4 and ab["conflict_coords"] == 2
    assert ab["conflict_fraction_active"] == pytest.approx(0.5)
    assert ab["per_model"]["a"]["cl2"] == pytest.approx(math.sqrt(10))
    assert ab["per_model"]["b"]["cl2"] == pytest.approx(math.sqrt(17))
    assert ab["per_model"]["a"]["ties_discarded_l2"] == pytest.approx(3.0)
    assert ab["per_model"]["b"]["ties_discarded_l2"] == pytest.approx(1.0)
    # a|c: both active only at p1, opposed there
    assert ac["multi_active_coords"] == 1 and ac["conflict_fraction_active"] == pytest.approx(1.0)


def test_aggregation_sums_squares_and_counts() -> None:
    r = analyze()
    w = r.whole_model()
    assert w["numel"] == 8
    assert w["conflict_coords"] == 4 and w["multi_active_coords"] == 6
    assert w["conflict_fraction_active"] == pytest.approx(4 / 6)
    assert w["conflict_fraction_all"] == pytest.approx(4 / 8)
    a = w["per_model"]["a"]
    assert a["l2"] == pytest.approx(math.sqrt(15 + 8))
    assert a["cl2"] == pytest.approx(math.sqrt(14 + 4))
    assert a["cl2_ratio"] == pytest.approx(math.sqrt(18 / 23))
    # cosine of the concatenated vectors, not a mean of cosines
    assert w["per_pair"]["a|b"]["cosine"] == pytest.approx(
        (-7 + 0) / (math.sqrt(23) * math.sqrt(33))
    )
    assert r.per_layer()[1]["conflict_fraction_active"] == pytest.approx(1 / 2)
    assert list(r.per_module()) == ["q", "down"]  # display order
    assert r.per_layer_module()[0]["q"] == r.tensor_figures(0)
    assert [layer for layer, _ in r.most_conflicted_layers()] == [0, 1]


def test_tensor_scope_trim_hand_computed() -> None:
    f = analyze(density=0.5).tensor_figures(0)
    # trimmed (k=3): a -> [1,2,0,0,0,3] (tie at |1|: lower index), b -> [0,2,0,-2,0,-4], c unchanged
    assert f["multi_active_coords"] == 2 and f["conflict_coords"] == 2  # p1 and p5
    a = f["per_model"]["a"]
    assert a["l2"] == pytest.approx(math.sqrt(14))
    assert a["l2_untrimmed"] == pytest.approx(math.sqrt(15))
    assert a["unchanged_fraction"] == pytest.approx(2 / 6)  # of the untrimmed vector
    assert a["nonzero_fraction"] == pytest.approx(3 / 6)
    assert a["cl2"] == pytest.approx(math.sqrt(4 + 9))
    assert f["per_model"]["b"]["cl2"] == pytest.approx(math.sqrt(4 + 16))


def test_global_scope_trim_hand_computed() -> None:
    r = analyze(density=0.375, trim_scope="global")
    # a over 8 coords, k=3: keeps 3, then the first two of the tied 2s: t1[1], t2[0]
    a1 = r.tensor_figures(0)["per_model"]["a"]
    a2 = r.tensor_figures(1)["per_model"]["a"]
    assert a1["l2"] == pytest.approx(math.sqrt(4 + 9)) and a2["l2"] == pytest.approx(2.0)
    assert r.thresholds["a"] == 2.0 and r.thresholds["c"] == 0.0
    assert r.summary()["trim"] == {
        "density": 0.375,
        "scope": "global",
        "global_thresholds": r.thresholds,
    }
    # b over 8 coords: |.| = 1,2,0,2,0,4,2,2; k=3 keeps 4 then the 2s at t1[1], t1[3]
    b1 = r.tensor_figures(0)["per_model"]["b"]
    assert b1["l2"] == pytest.approx(math.sqrt(4 + 4 + 16))
    assert r.tensor_figures(1)["per_model"]["b"]["l2"] == 0.0


def test_all_zero_tensor_gives_none_not_nan() -> None:
    zeros = {v: [0.0, 0.0, 0.0] for v in "ab"}
    r = analyze_conflicts(["z"], {"z": Info(None, "norm")}, providers({"z": zeros}))  # type: ignore[arg-type]
    f = r.whole_model()
    assert f["conflict_fraction_active"] is None and f["conflict_fraction_all"] == 0.0
    assert (
        f["per_model"]["a"]["cl2_ratio"] is None
        and f["per_model"]["a"]["unchanged_fraction"] == 1.0
    )
    assert f["per_pair"]["a|b"]["cosine"] is None
    assert r.per_layer() == {} and r.most_conflicted_layers() == []


def test_providers_output_is_not_modified_by_trimming() -> None:
    held = {"t": torch.tensor([1.0, -2.0, 3.0, 0.5])}
    r = analyze_conflicts(
        ["t"], {"t": Info(0, "q")}, {"a": lambda t: held[t], "b": lambda t: -held[t]}, density=0.5
    )
    assert held["t"].tolist() == [1.0, -2.0, 3.0, 0.5]
    assert r.whole_model()["conflict_coords"] == 2


def test_errors_name_the_argument() -> None:
    with pytest.raises(ConfigError, match=r"density: must be in \(0, 1\], got 1.5"):
        analyze(density=1.5)
    with pytest.raises(ConfigError, match="Available: tensor, global"):
        analyze(trim_scope="model")
    bad = providers({"t1": T1, "t2": T2})
    bad["c"] = lambda t: torch.zeros(3)
    with pytest.raises(ArchitectureMismatchError, match=r"'t1'.*'c'"):
        analyze_conflicts(["t1"], INFOS, bad)  # type: ignore[arg-type]
    bad["c"] = lambda t: torch.full((6,), float("nan"))
    with pytest.raises(CheckpointError, match="NaN"):
        analyze_conflicts(["t1"], INFOS, bad)  # type: ignore[arg-type]
