"""Search spaces: validation, decode/encode round trip, and mergekit reproducing decoded recipes."""

from __future__ import annotations

import filecmp
from pathlib import Path

import numpy as np
import pytest
import torch
from mergekit.config import MergeConfiguration
from mergekit.config import evaluate_setting as mk_evaluate_setting

from evomerge.exceptions import ConfigError, SearchError
from evomerge.merge.recipe import MergeRecipe, evaluate_setting
from evomerge.space import SearchSpace, load_space_spec, shipped_space_names, shipped_spaces_dir

REPO = Path(__file__).resolve().parents[2]
REQUIRED = {
    "linear_layerwise",
    "ties_layerwise",
    "dare_ties_layerwise",
    "task_arithmetic_with_base",
}


def bind(name: str, *, num_layers: int = 6, n_sources: int = 2, **overrides: object) -> SearchSpace:
    spec = load_space_spec(name, overrides=overrides or None)
    return SearchSpace(
        spec=spec,
        num_layers=num_layers,
        base="/m/base",
        sources=[f"/m/src{i}" for i in range(n_sources)],
        names=[f"s{i}" for i in range(n_sources)],
    )


def test_required_spaces_are_shipped_and_mirrored_at_repo_root() -> None:
    assert set(shipped_space_names()) >= REQUIRED
    for name in shipped_space_names():
        shipped = shipped_spaces_dir() / f"{name}.yaml"
        mirror = REPO / "search_spaces" / f"{name}.yaml"
        assert mirror.exists(), f"search_spaces/{name}.yaml is missing at the repo root"
        assert filecmp.cmp(shipped, mirror, shallow=False), (
            f"search_spaces/{name}.yaml differs from the shipped copy"
        )
    extra = {p.stem for p in (REPO / "search_spaces").glob("*.yaml")} - set(shipped_space_names())
    assert not extra, f"repo-root spaces not shipped in the package: {extra}"


def test_dimensions_count_and_names() -> None:
    # 32 layers, granularity 4 -> 8 groups; ties searches weight and density per source
    sp = bind("ties_layerwise", num_layers=32, n_sources=3)
    assert sp.num_groups == 8
    assert sp.dim == 8 * 3 * 2
    assert sp.names_in_order[:4] == [
        "g0.all.s0.weight",
        "g0.all.s0.density",
        "g0.all.s1.weight",
        "g0.all.s1.density",
    ]
    filtered = bind("ties_layerwise", num_layers=32, n_sources=3, filters=["self_attn", "mlp"])
    assert filtered.dim == 8 * 3 * 3 * 2  # groups x (2 filters + rest) x sources x params
    assert "g7.rest.s2.density" in filtered.names_in_order
    with_base = bind("task_arithmetic_with_base", num_layers=32, n_sources=2)
    assert with_base.dim == 8 * (2 + 1)
    assert "g3.all.base.weight" in with_base.names_in_order
    uneven = bind("linear_layerwise", num_layers=6)  # 6 layers, groups of 4: [0..3], [4, 5]
    assert uneven.num_groups == 2 and list(uneven.layers_of_group(1)) == [4, 5]


@pytest.mark.parametrize("name", sorted(REQUIRED))
@pytest.mark.parametrize("filters", [[], ["self_attn", "mlp"]])
def test_decode_encode_round_trip(name: str, filters: list[str]) -> None:
    sp = bind(name, filters=filters) if filters else bind(name)
    rng = np.random.default_rng(0)
    for _ in range(5):
        x = rng.uniform(sp.lower, sp.upper)
        recipe = sp.decode(x)
        np.testing.assert_allclose(sp.encode(recipe), x, rtol=0, atol=1e-12)
        # through mergekit's YAML and back: same recipe, same genome
        again = MergeRecipe.from_mergekit_dict(
            MergeConfiguration.model_validate(recipe.to_mergekit_dict()).model_dump(
                exclude_none=True
            )
        )
        np.testing.assert_allclose(sp.encode(again), x, rtol=0, atol=1e-12)


def test_start_point_gives_equal_weights() -> None:
    sp = bind("linear_layerwise")
    recipe = sp.decode(sp.x0())
    weights = {m.model: m.parameters["weight"] for m in recipe.models}
    assert len({str(w) for w in weights.values()}) == 1  # every source the same weight
    assert recipe.parameters["normalize"] is True
    assert recipe.base_model is None  # linear needs none; mergekit would not use it


@pytest.mark.parametrize("num_layers", [1, 2, 6, 23, 32, 40, 80])
def test_per_layer_values_are_piecewise_constant_in_mergekit(num_layers: int) -> None:
    """mergekit reads each layer's gradient at t = layer/(L-1): it must see its group's value."""
    sp = bind("ties_layerwise", num_layers=num_layers, filters=["self_attn", "mlp"])
    x = np.random.default_rng(num_layers).uniform(sp.lower, sp.upper)
    recipe = sp.decode(x)
    src = recipe.models[0]
    mk_setting = (
        MergeConfiguration.model_validate(recipe.to_mergekit_dict()).models[0].parameters["weight"]
    )
    for d in (d for d in sp.dimensions if d.source == 0 and d.param == "weight"):
        for layer in sp.layers_of_group(d.group):
            t = layer / (num_layers - 1) if num_layers > 1 else 1.0  # mergekit's plan.py
            name = f"model.layers.{layer}.{'input_layernorm' if d.filter == 'rest' else d.filter + '.x'}.weight"
            ours = evaluate_setting(src.parameters["weight"], name, t)
            theirs = mk_evaluate_setting(name, mk_setting, t, validate=float)
            assert ours == theirs  # same arithmetic, bit for bit
            assert theirs == pytest.approx(x[sp.names_in_order.index(d.name)], abs=1e-12)


def test_mergekit_reproduces_layer_groups_and_filters(
    six_layer_models, mergekit_merge, weights_of, tmp_path
) -> None:
    """A decoded linear recipe merged by mergekit equals the per-group formula on every tensor."""
    m = six_layer_models
    spec = load_space_spec("linear_layerwise", overrides={"filters": ["self_attn", "mlp"]})
    sp = SearchSpace(
        spec=spec, num_layers=6, base=str(m["base"]), sources=[str(m["ft_a"]), str(m["ft_b"])]
    )
    x = np.random.default_rng(3).uniform(sp.lower, sp.upper)
    merged = mergekit_merge(sp.decode(x), tmp_path / "out")
    a, b = weights_of(m["ft_a"]), weights_of(m["ft_b"])
    value = dict(zip(sp.names_in_order, x, strict=True))
    for name, out in merged.items():
        layer = (
            int(name.split(".")[2]) if name.startswith("model.layers.") else 0
        )  # outside layers: t = 0
        f = "self_attn" if "self_attn" in name else "mlp" if "mlp" in name else "rest"
        g = sp.group_of_layer(layer)
        wa, wb = value[f"g{g}.{f}.source0.weight"], value[f"g{g}.{f}.source1.weight"]
        expected = (wa * a[name] + wb * b[name]) / (wa + wb)
        torch.testing.assert_close(
            out, expected, rtol=1e-6, atol=1e-6, msg=f"{name} (group {g}, {f})"
        )


def test_base_share_means_what_it_says(
    six_layer_models, mergekit_merge, weights_of, tmp_path
) -> None:
    """task_arithmetic_with_base: theta = s*base + (1-s)*(wa*a + wb*b)/(wa+wb), per layer group."""
    m = six_layer_models
    spec = load_space_spec("task_arithmetic_with_base")
    sp = SearchSpace(
        spec=spec, num_layers=6, base=str(m["base"]), sources=[str(m["ft_a"]), str(m["ft_b"])]
    )
    x = np.random.default_rng(4).uniform(sp.lower, sp.upper)
    merged = mergekit_merge(sp.decode(x), tmp_path / "out")
    base, a, b = weights_of(m["base"]), weights_of(m["ft_a"]), weights_of(m["ft_b"])
    value = dict(zip(sp.names_in_order, x, strict=True))
    for name in (
        "model.layers.1.mlp.up_proj.weight",
        "model.layers.5.self_attn.q_proj.weight",
        "model.norm.weight",
    ):
        layer = int(name.split(".")[2]) if name.startswith("model.layers.") else 0
        g = sp.group_of_layer(layer)
        s, wa, wb = (
            value[f"g{g}.all.base.weight"],
            value[f"g{g}.all.source0.weight"],
            value[f"g{g}.all.source1.weight"],
        )
        expected = s * base[name] + (1 - s) * (wa * a[name] + wb * b[name]) / (wa + wb)
        torch.testing.assert_close(merged[name], expected, rtol=1e-5, atol=1e-6)


def test_space_errors_name_fields_and_choices() -> None:
    with pytest.raises(
        ConfigError, match=r"Unknown merge method 'tie'.*Available: linear, task_arithmetic, ties"
    ):
        load_space_spec({"name": "x", "method": "tie", "params": {"weight": {"low": 0, "high": 1}}})
    with pytest.raises(ConfigError) as err:
        load_space_spec(
            {
                "name": "x",
                "method": "ties",
                "layer_granularity": 0,
                "filters": ["attn", "self_attn"],
                "params": {"weight": {"low": 1, "high": 0}},
                "typo": 1,
            }
        )
    text = str(err.value)
    for field in ("layer_granularity", "filters", "params.weight", "typo"):  # every error at once
        assert field in text
    with pytest.raises(ConfigError, match=r"base_weight.*normalize: true"):
        load_space_spec("task_arithmetic_with_base", overrides={"normalize": False})
    with pytest.raises(ConfigError, match="not searchable with linear"):
        load_space_spec(
            "linear_layerwise", overrides={"params": {"density": {"low": 0.1, "high": 1}}}
        )
    with pytest.raises(
        ConfigError, match=r"Unknown search space 'nope'.*Available: .*linear_layerwise"
    ):
        load_space_spec("nope")
    with pytest.raises(SearchError, match="genome has 3 values, space linear_layerwise needs"):
        bind("linear_layerwise").decode([0.5, 0.5, 0.5])
    with pytest.raises(SearchError, match="at most 1 source"):
        SearchSpace(
            spec=load_space_spec(
                {"name": "s", "method": "slerp", "params": {"t": {"low": 0, "high": 1}}}
            ),
            num_layers=4,
            base="/b",
            sources=["/a", "/c"],
        )


def test_space_file_relative_to_base_dir(tmp_path: Path) -> None:
    (tmp_path / "spaces").mkdir()
    (tmp_path / "spaces" / "mine.yaml").write_text(
        "method: ties\nparams: {density: {low: 0.2, high: 0.9}}\n"
    )
    spec = load_space_spec("spaces/mine.yaml", base_dir=tmp_path)
    assert spec.name == "mine" and spec.layer_granularity == 1 and list(spec.params) == ["density"]
