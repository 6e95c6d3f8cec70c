"""Parity with mergekit 0.1.5 for the methods beyond the task-arithmetic family.

sce, model_stock, nuslerp, multislerp, karcher, nearswap, arcee_fusion, ram, ramplus_tl:
each case runs mergekit in-process (the oracle), ``evomerge merge`` (``merge_from_yaml``,
the streaming merge) and a MergeEngine shared by all cases, in float32, and every tensor
must agree within 1e-5, gradients and filters included. Cases without a base_model merge
the models themselves: the engine then rebuilds them as base + task vector.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from evomerge.merge import MergeEngine, MergeRecipe
from evomerge.pool import ModelPool

TOL = 1e-5
NEW_METHODS = (
    "sce",
    "model_stock",
    "nuslerp",
    "multislerp",
    "karcher",
    "nearswap",
    "arcee_fusion",
    "ram",
    "ramplus_tl",
)
FILTERED = [
    {"filter": "self_attn", "value": [0.3, 0.8]},
    {"filter": "mlp", "value": 0.5},
    {"value": 0.7},
]

CASES: dict[str, dict[str, Any]] = {
    "sce_defaults": {
        "merge_method": "sce",
        "base_model": "base",
        "models": [("ft_a", {}), ("ft_b", {}), ("ft_c", {})],
    },
    "sce_select_topk_filters": {
        "merge_method": "sce",
        "base_model": "base",
        "models": [("ft_a", {}), ("ft_b", {}), ("ft_c", {})],
        "parameters": {"select_topk": FILTERED, "int8_mask": True},
    },
    "model_stock": {
        "merge_method": "model_stock",
        "base_model": "base",
        "models": [("ft_a", {}), ("ft_b", {}), ("ft_c", {})],
    },
    "model_stock_filter_wise": {
        "merge_method": "model_stock",
        "base_model": "base",
        "models": [("ft_a", {}), ("far", {})],
        "parameters": {"filter_wise": True},
    },
    "nuslerp_task_vectors": {
        "merge_method": "nuslerp",
        "base_model": "base",
        "models": [("ft_a", {"weight": [0.2, 0.9]}), ("far", {"weight": 0.5})],
    },
    "nuslerp_models_per_row": {
        "merge_method": "nuslerp",
        "models": [("ft_a", {"weight": 0.3}), ("ft_b", {"weight": FILTERED})],
        "parameters": {"nuslerp_flatten": False},
    },
    "nuslerp_row_wise": {
        "merge_method": "nuslerp",
        "base_model": "base",
        "models": [("ft_a", {"weight": 0.6}), ("ft_c", {"weight": 0.4})],
        "parameters": {"nuslerp_flatten": False, "nuslerp_row_wise": True},
    },
    "multislerp_task_vectors": {
        "merge_method": "multislerp",
        "base_model": "base",
        "models": [
            ("ft_a", {"weight": [0.2, 0.9]}),
            ("ft_b", {"weight": 0.5}),
            ("far", {"weight": 0.3}),
        ],
    },
    "multislerp_models_unnormalized": {
        "merge_method": "multislerp",
        "models": [
            ("ft_a", {"weight": 0.4}),
            ("ft_b", {"weight": FILTERED}),
            ("ft_c", {"weight": 0.3}),
        ],
        "parameters": {"normalize_weights": False},
    },
    "karcher_with_base": {
        "merge_method": "karcher",
        "base_model": "base",
        "models": [("ft_a", {}), ("far", {})],
    },
    "karcher_models": {
        "merge_method": "karcher",
        "models": [("ft_a", {}), ("ft_b", {}), ("ft_c", {})],
        "parameters": {"max_iter": 4, "tol": 1e-6},
    },
    "nearswap_filters": {
        "merge_method": "nearswap",
        "base_model": "base",
        "models": [("far", {})],
        "parameters": {"t": [{"filter": "mlp", "value": [0.001, 0.01]}, {"value": 0.004}]},
    },
    "arcee_fusion": {"merge_method": "arcee_fusion", "base_model": "base", "models": [("far", {})]},
    "ram": {
        "merge_method": "ram",
        "base_model": "base",
        "models": [("ft_c", {}), ("ft_d", {}), ("ft_a", {})],
    },
    "ramplus_tl_gradient": {
        "merge_method": "ramplus_tl",
        "base_model": "base",
        "models": [("ft_c", {}), ("ft_d", {})],
        "parameters": {"r": [0.1, 0.6], "alpha": 0.5, "epsilon": 1e-4},
    },
}
ENGINE_SOURCES = ("ft_a", "ft_b", "ft_c", "ft_d", "far")


def test_cases_cover_every_new_method() -> None:
    assert {c["merge_method"] for c in CASES.values()} == set(NEW_METHODS)


@pytest.fixture(scope="module")
def paths(tiny_models: Any, far_model: Path) -> dict[str, Path]:
    from evomerge.testing.tiny import perturb_model

    ft_d = perturb_model(tiny_models.base, Path(tiny_models.root) / "ft_d", seed=6, fraction=0.4)
    return {**tiny_models.as_dict(), "far": far_model, "ft_d": ft_d}


@pytest.fixture(scope="module")
def engine(paths: dict[str, Path]) -> MergeEngine:
    pool = ModelPool.open(paths["base"], [paths[n] for n in ENGINE_SOURCES])
    return MergeEngine(pool, methods=list(NEW_METHODS))


def _config(case: dict[str, Any], paths: dict[str, Path]) -> dict[str, Any]:
    cfg = {k: v for k, v in case.items() if k not in ("models", "base_model")}
    cfg["models"] = [
        {"model": str(paths[m]), **({"parameters": p} if p else {})} for m, p in case["models"]
    ]
    if "base_model" in case:
        cfg["base_model"] = str(paths[case["base_model"]])
    cfg["dtype"] = "float32"
    return cfg


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[float, str]:
    worst = max(b, key=lambda n: float((a[n].float() - b[n].float()).abs().max()))
    return float((a[worst].float() - b[worst].float()).abs().max()), worst


def _assert_close(
    ours: dict[str, torch.Tensor],
    theirs: dict[str, torch.Tensor],
    base: dict[str, torch.Tensor],
    who: str,
) -> None:
    """Within 1e-5 everywhere, and within 0.1% of how far mergekit moved each tensor from
    the base (task vectors are ~1e-3, so 1e-5 alone would let a 1% error through)."""
    diff, worst = _max_diff(ours, theirs)
    assert diff <= TOL, f"{who} vs mergekit: {diff:.3g} at {worst}"
    for name, t in theirs.items():
        moved = float((t - base[name]).abs().max())
        err = float((ours[name] - t).abs().max())
        assert err <= 1e-3 * moved + 1e-7, f"{who} vs mergekit at {name}: {err:.3g} of {moved:.3g}"


@pytest.mark.parametrize("case", list(CASES))
def test_new_methods_match_mergekit(
    case: str,
    paths: dict[str, Path],
    engine: MergeEngine,
    mergekit_merge: Callable[[dict[str, Any]], Any],
    tmp_path: Path,
) -> None:
    from safetensors.torch import load_file

    from evomerge.export import merge_from_yaml

    config = _config(CASES[case], paths)
    theirs = mergekit_merge(config)
    base = load_file(str(paths["base"] / "model.safetensors"))
    assert any(float((theirs[n] - base[n]).abs().max()) > 1e-4 for n in theirs)  # not a no-op

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(config))
    ours = load_file(str(merge_from_yaml(cfg, tmp_path / "out") / "model.safetensors"))
    assert set(ours) == set(theirs)
    for name, t in ours.items():
        assert t.shape == theirs[name].shape and t.dtype == theirs[name].dtype, name
    _assert_close(ours, theirs, base, "evomerge merge")
    merged = engine.materialize(MergeRecipe.from_mergekit_dict(config))
    _assert_close({n: merged[n] for n in theirs}, theirs, base, "engine")
