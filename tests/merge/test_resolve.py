"""Recipe validation and per-tensor parameter resolution, against hand-computed values."""

from __future__ import annotations

from typing import Any

import pytest

from evomerge.exceptions import MergeError, UnknownMethodError
from evomerge.merge import MergeRecipe, plan_merge
from evomerge.merge.recipe import evaluate_setting
from evomerge.pool import ModelPool

LAYER = "model.layers.{}.self_attn.q_proj.weight"
MLP = "model.layers.{}.mlp.up_proj.weight"


@pytest.fixture(scope="module")
def pool(tiny_models: Any) -> ModelPool:
    return ModelPool.open(tiny_models.base, [tiny_models.ft_a, tiny_models.ft_b, tiny_models.ft_c])


def _recipe(
    pool: ModelPool, method: str, models: list[tuple[int | str, dict[str, Any]]], **top: Any
) -> MergeRecipe:
    def ref(m: int | str) -> str:
        return str(pool.base_path) if m == "base" else str(pool.source_paths[int(m)])

    data = {
        "merge_method": method,
        "models": [{"model": ref(m), "parameters": p} for m, p in models],
        **top,
    }
    if top.get("base_model") == "base":
        data["base_model"] = str(pool.base_path)
    return MergeRecipe.from_mergekit_dict(data)


def _args(pool: ModelPool, recipe: MergeRecipe) -> dict[str, Any]:
    return {t.name: t.args for t in plan_merge(recipe, pool).tensors}


def test_gradient_is_interpolated_over_layers_and_zero_outside(pool: ModelPool) -> None:
    assert pool.num_layers == 4
    r = _recipe(
        pool,
        "task_arithmetic",
        [(0, {"weight": [0.0, 1.0]}), (1, {"weight": [1.0, 0.0, 3.0]})],
        base_model="base",
    )
    args = _args(pool, r)
    # t = layer / 3; two entries: t itself; three entries [1, 0, 3]: t=1/3 -> 2/3*1 + 1/3*0 ...
    expected_a = [0.0, 1 / 3, 2 / 3, 1.0]
    expected_b = [1.0, 1 / 3, 1.0, 3.0]  # t*2 = 0, 2/3, 4/3, 2 -> 1, 1/3*0+..., 0+1/3*3, 3
    for layer in range(4):
        w = args[LAYER.format(layer)].per_input("weight")
        assert w == pytest.approx([expected_a[layer], expected_b[layer]])
    assert args["model.embed_tokens.weight"].per_input("weight") == pytest.approx(
        [0.0, 1.0]
    )  # t = 0
    assert args["model.norm.weight"].per_input("weight") == pytest.approx([0.0, 1.0])


def test_filters_pick_the_first_match_then_the_catch_all(pool: ModelPool) -> None:
    setting = [
        {"filter": "self_attn", "value": 0.2},
        {"filter": "mlp", "value": [0.0, 0.9]},
        {"value": 0.7},
    ]
    r = _recipe(pool, "task_arithmetic", [(0, {"weight": setting})], base_model="base")
    args = _args(pool, r)
    assert args[LAYER.format(2)].per_input("weight") == pytest.approx([0.2])
    assert args[MLP.format(3)].per_input("weight") == pytest.approx([0.9])
    assert args[MLP.format(1)].per_input("weight") == pytest.approx([0.3])
    assert args["model.norm.weight"].per_input("weight") == pytest.approx([0.7])


def test_a_filter_without_catch_all_falls_back_to_global_then_default(pool: ModelPool) -> None:
    r = _recipe(
        pool,
        "ties",
        [(0, {"weight": 1.0, "density": {"filter": "mlp", "value": 0.3}}), (1, {"weight": 2.0})],
        base_model="base",
        parameters={"density": {"filter": "self_attn", "value": 0.6}},
    )
    args = _args(pool, r)
    assert args[MLP.format(0)].per_input("density") == pytest.approx([0.3, 1.0])  # own / default
    assert args[LAYER.format(0)].per_input("density") == pytest.approx([0.6, 0.6])  # global
    assert args["model.norm.weight"].per_input("density") == pytest.approx(
        [1.0, 1.0]
    )  # method default


def test_per_model_parameters_take_precedence_over_global(pool: ModelPool) -> None:
    r = _recipe(
        pool,
        "task_arithmetic",
        [(0, {"weight": 0.25}), (1, {})],
        base_model="base",
        parameters={"weight": 0.5},
    )
    assert _args(pool, r)[LAYER.format(1)].per_input("weight") == [0.25, 0.5]


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("ties", {"normalize": True, "rescale": False, "lambda": 1.0, "int8_mask": False}),
        ("task_arithmetic", {"normalize": False, "rescale": False}),
        ("dare_ties", {"normalize": False, "rescale": True}),
        ("dare_linear", {"normalize": False, "rescale": True}),
        ("breadcrumbs", {"normalize": False, "rescale": False}),
        ("della", {"normalize": True, "rescale": True}),
        ("della_linear", {"normalize": False, "rescale": True}),
    ],
)
def test_method_defaults_follow_mergekit(
    pool: ModelPool, method: str, expected: dict[str, Any]
) -> None:
    r = _recipe(pool, method, [(0, {"weight": 1.0})], base_model="base")
    a = _args(pool, r)[LAYER.format(0)]
    assert {k: a.globals[k] for k in expected} == expected
    assert a.inputs[0]["density"] == 1.0
    if method.startswith("breadcrumbs"):
        assert a.inputs[0]["gamma"] == 0.01
    if method.startswith("della"):
        assert a.inputs[0]["epsilon"] == 0.15


def test_boolean_gradients_pick_entries_like_mergekit(pool: ModelPool) -> None:
    """``normalize: [0, 1]`` validates to booleans first, so layers pick an entry (no interpolation)."""
    r = _recipe(
        pool, "ties", [(0, {"weight": 1.0})], base_model="base", parameters={"normalize": [0, 1]}
    )
    args = _args(pool, r)
    assert [args[LAYER.format(i)].globals["normalize"] for i in range(4)] == [
        False,
        False,
        False,
        True,
    ]
    assert evaluate_setting([0.0, 1.0], "x", 0.5) == 0.5  # numbers without a type still interpolate


def test_linear_gives_the_base_its_own_or_the_global_weight(pool: ModelPool) -> None:
    listed = _recipe(
        pool, "linear", [("base", {"weight": 0.2}), (0, {"weight": 0.8})], base_model="base"
    )
    a = _args(pool, listed)[LAYER.format(0)]
    assert a.base == {"weight": 0.2} and a.per_input("weight") == [0.8]
    appended = _recipe(
        pool, "linear", [(0, {"weight": 0.8})], base_model="base", parameters={"weight": 0.3}
    )
    a = _args(pool, appended)[LAYER.format(0)]
    assert a.base == {"weight": 0.3}  # mergekit appends the base as an input with global parameters
    no_base = _recipe(pool, "linear", [(0, {"weight": 0.8}), (1, {"weight": 0.2})])
    assert _args(pool, no_base)[LAYER.format(0)].base is None


def test_task_arithmetic_ignores_the_base_entry_when_listed(pool: ModelPool) -> None:
    r = _recipe(pool, "ties", [("base", {"weight": 9.0}), (1, {"weight": 0.5})], base_model="base")
    plan = plan_merge(r, pool)
    assert plan.delta_sources == (1,)
    assert plan.tensors[0].args.per_input("weight") == [0.5]


def test_unknown_method_lists_the_choices(pool: ModelPool) -> None:
    r = _recipe(pool, "tie", [(0, {"weight": 1.0})], base_model="base")
    with pytest.raises(UnknownMethodError) as err:
        plan_merge(r, pool)
    msg = str(err.value)
    assert "Unknown merge method 'tie'" in msg
    for name in ("linear", "ties", "dare_ties", "slerp", "passthrough"):
        assert name in msg


def test_unknown_and_misplaced_parameters_are_all_reported(pool: ModelPool) -> None:
    r = _recipe(
        pool,
        "ties",
        [(0, {"weight": 1.0, "densty": 0.5, "normalize": False})],
        base_model="base",
        parameters={"epsilon": 0.1},
    )
    with pytest.raises(MergeError) as err:
        plan_merge(r, pool)
    msg = str(err.value)
    assert "3 problem(s)" in msg
    assert "models[0].parameters.densty: unknown parameter" in msg
    assert "Valid: weight, density, normalize, rescale, lambda, int8_mask" in msg
    assert "parameters.epsilon: unknown parameter" in msg
    assert "models[0].parameters.normalize" in msg and "top-level 'parameters'" in msg


def test_missing_required_parameters_are_named(pool: ModelPool) -> None:
    r = _recipe(pool, "task_arithmetic", [(0, {"weight": 1.0}), (1, {})], base_model="base")
    with pytest.raises(
        MergeError, match=r"models\[1\]\.parameters\.weight: required by merge method"
    ):
        plan_merge(r, pool)
    gap = _recipe(
        pool,
        "task_arithmetic",
        [(0, {"weight": {"filter": "mlp", "value": 1.0}})],
        base_model="base",
    )
    with pytest.raises(
        MergeError,
        match=r"missing required parameter 'weight' for model '.*ft_a'.* \(tensors .* and 24 more\)",
    ):
        plan_merge(gap, pool)
    appended = _recipe(pool, "linear", [(0, {"weight": 1.0})], base_model="base")
    with pytest.raises(
        MergeError, match=r"base_model: .* is an input of 'linear' and needs 'weight'"
    ):
        plan_merge(appended, pool)
    slerp = _recipe(pool, "slerp", [(0, {"t": 0.5})], base_model="base")
    with pytest.raises(MergeError) as err:
        plan_merge(slerp, pool)
    assert "parameters.t: required by merge method 'slerp'" in str(err.value)
    assert "models[0].parameters.t: 't' applies to the whole merge" in str(err.value)


def test_structural_problems(pool: ModelPool, tiny_models: Any) -> None:
    three = _recipe(pool, "slerp", [(0, {}), (1, {})], base_model="base", parameters={"t": 0.5})
    with pytest.raises(
        MergeError, match=r"slerp merges exactly 2 model\(s\) \(the base model and 1 other\); got 3"
    ):
        plan_merge(three, pool)
    passthrough = _recipe(pool, "passthrough", [(0, {})], base_model="base")
    with pytest.raises(
        MergeError,
        match=r"passthrough merges exactly 1 model\(s\); got 2: .*base_model counts as an input",
    ):
        plan_merge(passthrough, pool)
    no_base = _recipe(pool, "ties", [(0, {"weight": 1.0})])
    with pytest.raises(MergeError, match="needs a base_model"):
        plan_merge(no_base, pool)
    outsider = MergeRecipe.from_mergekit_dict(
        {
            "merge_method": "ties",
            "base_model": str(pool.base_path),
            "models": [
                {"model": str(tiny_models.lora_a), "parameters": {"weight": 1.0}},
                {"model": str(pool.source_paths[0]), "parameters": {"weight": 1.0}},
                {"model": str(pool.source_paths[0]) + "/", "parameters": {"weight": 1.0}},
            ],
        }
    )
    with pytest.raises(MergeError) as err:
        plan_merge(outsider, pool)
    assert "models[0].model" in str(err.value) and "not in the model pool" in str(err.value)
    assert "models[2].model" in str(err.value) and "listed twice" in str(err.value)


def test_value_problems_are_checked_for_every_tensor(pool: ModelPool) -> None:
    della = _recipe(
        pool, "della", [(0, {"weight": 1.0, "density": 0.1, "epsilon": 0.2})], base_model="base"
    )
    with pytest.raises(MergeError, match=r"density \+/- epsilon must lie in \(0, 1\)"):
        plan_merge(della, pool)
    typed = _recipe(pool, "ties", [(0, {"weight": "heavy"})], base_model="base")
    with pytest.raises(MergeError, match=r"models\[0\]\.parameters\.weight: .*'heavy'"):
        plan_merge(typed, pool)
    zero = _recipe(pool, "linear", [(0, {"weight": 0.5}), (1, {"weight": -0.5})])
    with pytest.raises(MergeError, match="weights sum to 0"):
        plan_merge(zero, pool)
    dtype = _recipe(pool, "ties", [(0, {"weight": 1.0})], base_model="base", dtype="float8")
    with pytest.raises(MergeError, match=r"dtype: unknown dtype 'float8'\. Available: float32"):
        plan_merge(dtype, pool)


def test_declared_ranges_are_checked_before_any_tensor_is_read(
    pool: ModelPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ranges live in the registry (ParamSpec.low/high) and are checked on every written
    value, gradient end points and filtered values included, naming the field and range."""
    from evomerge.merge import check_recipe

    r = _recipe(
        pool,
        "breadcrumbs",
        [
            (0, {"weight": 1.0, "density": 1.5}),
            (1, {"weight": 1.0, "density": [0.2, -0.1], "gamma": {"filter": "mlp", "value": 2}}),
        ],
        base_model="base",
        parameters={"gamma": 0.5},
    )
    with pytest.raises(MergeError) as err:
        check_recipe(r)
    msg = str(err.value)
    assert "3 problem(s)" in msg
    assert "models[0].parameters.density: 1.5 is outside the allowed range [0, 1]" in msg
    assert "models[1].parameters.density: -0.1 is outside the allowed range [0, 1]" in msg
    assert "models[1].parameters.gamma: 2.0 is outside the allowed range [0, 1]" in msg

    def no_reads(*_: Any, **__: Any) -> None:
        raise AssertionError("a tensor was read")

    for attr in ("base_tensor", "source_tensor", "task_vector"):
        monkeypatch.setattr(pool, attr, no_reads)
    with pytest.raises(MergeError, match=r"density: 1\.5 is outside the allowed range \[0, 1\]"):
        plan_merge(r, pool)


@pytest.mark.parametrize(
    ("method", "models", "params", "expected"),
    [
        ("model_stock", [0], {}, r"model_stock merges at least 3 model\(s\); got 2"),
        (
            "nuslerp",
            [0, 1, 2],
            {},
            r"nuslerp merges exactly 2 model\(s\) besides the base_model; got 3",
        ),
        (
            "sce",
            [0, 1],
            {"select_topk": 1.5},
            r"parameters\.select_topk: 1\.5 is outside .*\[0, 1\]",
        ),
        ("nearswap", [0], {}, r"parameters\.t: required by merge method 'nearswap'"),
        (
            "nearswap",
            [0],
            {"t": -0.1},
            r"parameters\.t: -0\.1 is outside the allowed range \[0, inf\)",
        ),
        (
            "arcee_fusion",
            [0, 1],
            {},
            r"arcee_fusion merges exactly 2 model\(s\) \(the base model and 1 other\)",
        ),
        ("karcher", [0], {"max_iter": 2.5}, r"parameters\.max_iter: .*integer"),
        ("multislerp", [0], {}, r"models\[0\]\.parameters\.weight: required by merge method"),
    ],
)
def test_new_methods_report_bad_recipes_before_any_model_is_opened(
    pool: ModelPool, method: str, models: list[int], params: dict[str, Any], expected: str
) -> None:
    from evomerge.merge import check_recipe

    r = _recipe(pool, method, [(i, {}) for i in models], base_model="base", parameters=params)
    with pytest.raises(MergeError, match=expected):
        check_recipe(r)
