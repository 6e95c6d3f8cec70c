"""Parity with mergekit 0.1.5: the same YAML gives the same tensors (float32, 1e-5).

mergekit runs in-process on the session's tiny Llama models (the oracle); each case is
merged by our streaming merge and by a MergeEngine shared by all cases.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from evomerge.merge import MergeEngine, MergeRecipe, iter_merged_tensors, pool_for_recipe
from evomerge.pool import ModelPool

TOL = 1e-5
SELF_ATTN_MLP_REST = [
    {"filter": "self_attn", "value": [0.2, 0.9]},
    {"filter": "mlp", "value": 0.6},
    {"value": 0.35},
]

# Each case: models by fixture key (tiny_models names, or "far"), everything else as in YAML.
CASES: dict[str, dict[str, Any]] = {
    "linear_base_listed": {
        "merge_method": "linear",
        "base_model": "base",
        "models": [
            ("base", {"weight": 0.2}),
            ("ft_a", {"weight": 0.5}),
            ("ft_b", {"weight": [0.1, 0.9]}),
        ],
    },
    "linear_base_appended_global_weight": {
        "merge_method": "linear",
        "base_model": "base",
        "parameters": {"weight": 0.3},
        "models": [("ft_a", {"weight": 0.5}), ("ft_c", {})],
    },
    "linear_no_base_unnormalized": {
        "merge_method": "linear",
        "parameters": {"normalize": False},
        "models": [("ft_a", {"weight": 0.4}), ("ft_b", {"weight": SELF_ATTN_MLP_REST})],
    },
    "task_arithmetic_lambda_gradient": {
        "merge_method": "task_arithmetic",
        "base_model": "base",
        "parameters": {"lambda": 0.7},
        "models": [
            ("ft_a", {"weight": [0.0, 1.0, 0.5]}),
            ("ft_b", {"weight": -0.3}),
            ("ft_c", {"weight": 0.8}),
        ],
    },
    "task_arithmetic_filters_normalize": {
        "merge_method": "task_arithmetic",
        "base_model": "base",
        "parameters": {"normalize": True, "weight": 0.25},
        "models": [("base", {}), ("ft_a", {"weight": SELF_ATTN_MLP_REST}), ("ft_b", {})],
    },
    "task_arithmetic_lora": {
        "merge_method": "task_arithmetic",
        "base_model": "base",
        "models": [("lora_a", {"weight": 0.7}), ("ft_b", {"weight": 0.4})],
    },
    "ties_defaults": {
        "merge_method": "ties",
        "base_model": "base",
        "models": [
            ("ft_a", {"weight": 0.5, "density": 0.3}),
            ("ft_b", {"weight": 0.4, "density": 0.5}),
            ("ft_c", {"weight": 0.6, "density": 0.7}),
        ],
    },
    "ties_rescale_unnormalized_lambda": {
        "merge_method": "ties",
        "base_model": "base",
        "parameters": {"normalize": False, "rescale": True, "lambda": 1.5, "int8_mask": True},
        "models": [
            ("ft_a", {"weight": 0.5, "density": [0.1, 0.9]}),
            ("ft_b", {"weight": -0.4, "density": 0.5}),
            ("ft_c", {"weight": 0.6, "density": {"filter": "mlp", "value": 0.2}}),
        ],
    },
    "ties_vocab_differs": {
        "merge_method": "ties",
        "base_model": "base",
        "parameters": {"density": 0.4},
        "models": [("ft_a", {"weight": 0.5}), ("base_vocab_big", {"weight": 0.5})],
    },
    "breadcrumbs": {
        "merge_method": "breadcrumbs",
        "base_model": "base",
        "models": [
            ("ft_a", {"weight": 0.5, "density": 0.6, "gamma": 0.05}),
            ("ft_b", {"weight": 0.7, "density": 0.95, "gamma": 0.1}),
        ],
    },
    "breadcrumbs_rescale_normalize": {
        "merge_method": "breadcrumbs",
        "base_model": "base",
        "parameters": {"rescale": True, "normalize": True, "density": 0.5},
        "models": [("ft_a", {"weight": 0.5}), ("ft_b", {"weight": [0.2, 0.8], "gamma": 0.2})],
    },
    "breadcrumbs_ties_filters": {
        "merge_method": "breadcrumbs_ties",
        "base_model": "base",
        "parameters": {"lambda": 0.8},
        "models": [
            ("ft_a", {"weight": 0.6, "density": SELF_ATTN_MLP_REST}),
            ("ft_b", {"weight": 0.6}),
            ("ft_c", {"weight": 0.3, "density": 0.5, "gamma": [0.0, 0.2]}),
        ],
    },
    "slerp_spherical_gradient": {
        "merge_method": "slerp",
        "base_model": "base",
        "parameters": {"t": [0.0, 0.3, 1.0]},
        "models": [("far", {}), ("base", {})],
    },
    "slerp_nearly_linear_filter": {
        "merge_method": "slerp",
        "base_model": "base",
        "parameters": {"t": [{"filter": "self_attn", "value": 0.8}, {"value": 0.4}]},
        "models": [("ft_a", {})],
    },
    "passthrough_scale": {
        "merge_method": "passthrough",
        "models": [("ft_a", {"scale": {"filter": "mlp", "value": 0.5}})],
    },
}

DETERMINISTIC = (
    "linear",
    "task_arithmetic",
    "ties",
    "breadcrumbs",
    "breadcrumbs_ties",
    "slerp",
    "passthrough",
)


def test_cases_cover_every_deterministic_method() -> None:
    assert {c["merge_method"] for c in CASES.values()} == set(DETERMINISTIC)


def _ref(key: str, paths: dict[str, Path]) -> str:
    if key.startswith("lora"):
        return f"{paths['base']}+{paths[key]}"
    return str(paths[key])


def _config(case: dict[str, Any], paths: dict[str, Path]) -> dict[str, Any]:
    cfg = {k: v for k, v in case.items() if k not in ("models", "base_model")}
    cfg["models"] = [
        {"model": _ref(m, paths), **({"parameters": p} if p else {})} for m, p in case["models"]
    ]
    if "base_model" in case:
        cfg["base_model"] = str(paths[case["base_model"]])
    cfg["dtype"] = "float32"
    return cfg


@pytest.fixture(scope="module")
def paths(tiny_models: Any, far_model: Path) -> dict[str, Path]:
    return {**tiny_models.as_dict(), "far": far_model}


@pytest.fixture(scope="module")
def engine(paths: dict[str, Path]) -> MergeEngine:
    """One engine over every model the cases use, for every deterministic method."""
    names = ["ft_a", "ft_b", "ft_c", "far", "base_vocab_big", "lora_a"]
    pool = ModelPool.open(paths["base"], [paths[n] for n in names])
    return MergeEngine(pool, methods=list(DETERMINISTIC))


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[float, str]:
    worst = max(a, key=lambda n: float((a[n].float() - b[n].float()).abs().max()))
    return float((a[worst].float() - b[worst].float()).abs().max()), worst


@pytest.mark.parametrize("case", list(CASES))
def test_streaming_and_engine_match_mergekit(
    case: str,
    paths: dict[str, Path],
    engine: MergeEngine,
    mergekit_merge: Callable[[dict[str, Any]], Any],
) -> None:
    config = _config(CASES[case], paths)
    theirs = mergekit_merge(config)
    recipe = MergeRecipe.from_mergekit_dict(config)
    ours = dict(iter_merged_tensors(recipe, pool_for_recipe(recipe)))

    assert set(ours) == set(theirs)
    for name, t in ours.items():
        assert t.shape == theirs[name].shape, name
        assert t.dtype == theirs[name].dtype == torch.float32, name
    diff, worst = _max_diff(ours, theirs)
    assert diff <= TOL, f"streaming vs mergekit: {diff:.3g} at {worst}"

    merged = engine.materialize(recipe)
    diff, worst = _max_diff({n: merged[n] for n in ours}, theirs)
    assert diff <= TOL, f"engine vs mergekit: {diff:.3g} at {worst}"
    if "base_model" in CASES[case]:  # same base tensors and task vectors: the same bits
        for name, t in ours.items():
            assert torch.equal(merged[name], t), f"engine != streaming at {name}"


def test_merges_are_not_trivial(
    paths: dict[str, Path], mergekit_merge: Callable[[dict[str, Any]], Any]
) -> None:
    """The parity cases move weights away from every input (a no-op merge would pass vacuously)."""
    from safetensors.torch import load_file

    base = load_file(str(paths["base"] / "model.safetensors"))
    ft_a = load_file(str(paths["ft_a"] / "model.safetensors"))
    theirs = mergekit_merge(_config(CASES["ties_defaults"], paths))
    name = "model.layers.1.mlp.up_proj.weight"
    assert (theirs[name] - base[name]).abs().max() > 1e-3
    assert (theirs[name] - ft_a[name]).abs().max() > 1e-3


def test_slerp_cases_take_both_branches(paths: dict[str, Path]) -> None:
    from evomerge.merge.methods import slerp_stats

    pool = ModelPool.open(paths["base"], [paths["far"], paths["ft_a"]])
    name = "model.layers.0.mlp.up_proj.weight"
    base = pool.base_tensor(name)
    far = slerp_stats(base, pool.source_tensor(0, name) - base)
    near = slerp_stats(base, pool.source_tensor(1, name) - base)
    assert abs(far.dot) < 0.9995 < abs(near.dot)


def test_bfloat16_computation_stays_close_to_mergekit(
    paths: dict[str, Path], mergekit_merge: Callable[[dict[str, Any]], Any]
) -> None:
    """With dtype: bfloat16 both compute in bf16 (not float32); results agree to bf16 rounding.

    (TIES is left out: bf16 magnitudes tie often and tie-breaking is unspecified.)
    """
    config = {
        **_config(CASES["task_arithmetic_lambda_gradient"], paths),
        "dtype": "bfloat16",
        "out_dtype": "float32",
    }
    theirs = mergekit_merge(config)
    recipe = MergeRecipe.from_mergekit_dict(config)
    ours = dict(iter_merged_tensors(recipe, pool_for_recipe(recipe)))
    for name, t in ours.items():
        assert t.dtype == torch.float32
        scale = float(theirs[name].abs().max())
        assert float((t - theirs[name]).abs().max()) <= 2**-7 * scale, name
    float32 = dict(
        iter_merged_tensors(recipe.model_copy(update={"dtype": "float32"}), pool_for_recipe(recipe))
    )
    assert any(not torch.equal(float32[n], ours[n]) for n in ours)  # bf16 really was used
