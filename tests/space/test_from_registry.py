"""What a search space may search comes from the merge registry, and nowhere else.

A merge method installed by another package (entry point ``evomerge.merge_methods``) is
searchable with no change to ``evomerge.space``; parameter ranges declared on the
method's ParamSpecs bound every search space at config time.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from evomerge.exceptions import ConfigError, SearchError
from evomerge.merge import check_recipe, iter_merged_tensors, pool_for_recipe
from evomerge.space import SearchSpace, load_space_spec

PLUGIN = '''
import torch
from evomerge.merge.methods import REQUIRED, BasePolicy, MergeMethod, ParamSpec, Scope


def gain_sum(base, deltas, args, *, out=None, **_):
    """base + gain * sum_i w_i delta_i"""
    total = base.clone()
    for d, p in zip(deltas, args.inputs):
        total += args.globals["gain"] * p["weight"] * d
    if out is None:
        return total
    out.copy_(total)
    return out


METHOD = MergeMethod(
    name="gain_sum",
    fn=gain_sum,
    base=BasePolicy.REQUIRED,
    params=(
        ParamSpec("weight", float, Scope.NON_BASE, REQUIRED, "per model", search=True),
        ParamSpec("gain", float, Scope.GLOBAL, 1.0, "overall", low=0.0, high=2.0, search=True),
        ParamSpec("note", str, Scope.GLOBAL, "", "not searchable"),
    ),
)
'''


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A real installed distribution on sys.path whose entry point provides ``gain_sum``."""
    dist = tmp_path / "evo_gain_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: evo-gain-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[evomerge.merge_methods]\ngain_sum = evo_gain_plugin_mod:METHOD\n"
    )
    (tmp_path / "evo_gain_plugin_mod.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "evo_gain_plugin_mod", raising=False)
    return "gain_sum"


def test_a_plugin_method_is_searchable_without_changes_to_search(
    plugin: str, tiny_models: Any
) -> None:
    spec = load_space_spec(
        {
            "name": "plugged",
            "method": plugin,
            "layer_granularity": 2,
            "params": {"weight": {"low": 0.0, "high": 1.0}, "gain": {"low": 0.5, "high": 1.5}},
        }
    )
    space = SearchSpace(
        spec=spec,
        num_layers=4,
        base=str(tiny_models.base),
        sources=[str(tiny_models.ft_a), str(tiny_models.ft_b)],
    )
    assert space.names_in_order == [
        "g0.all.source0.weight",
        "g0.all.source1.weight",
        "g0.all.all.gain",
        "g1.all.source0.weight",
        "g1.all.source1.weight",
        "g1.all.all.gain",
    ]
    x = np.array([0.2, 0.6, 0.5, 0.4, 0.8, 1.5])
    recipe = space.decode(x)
    assert recipe.base_model == str(tiny_models.base)  # a REQUIRED base policy sets it
    np.testing.assert_allclose(space.encode(recipe), x)
    check_recipe(recipe)
    merged = dict(iter_merged_tensors(recipe, pool_for_recipe(recipe)))
    pool = pool_for_recipe(recipe)
    name = "model.layers.3.mlp.up_proj.weight"  # group 1: gain 1.5, weights 0.4 and 0.8
    base = pool.base_tensor(name)
    expected = base + 1.5 * (
        0.4 * (pool.source_tensor(0, name) - base) + 0.8 * (pool.source_tensor(1, name) - base)
    )
    torch.testing.assert_close(merged[name], expected, rtol=0, atol=1e-6)


def test_a_plugins_declared_ranges_bound_its_search_space(plugin: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_space_spec(
            {
                "name": "p",
                "method": plugin,
                "params": {"gain": {"low": 0.0, "high": 3.0}, "note": {"low": 0, "high": 1}},
            }
        )
    msg = str(err.value)
    assert "params.gain: bounds [0, 3] leave gain's allowed range [0, 2]" in msg
    assert "params.note: not searchable with gain_sum; choose from weight, gain" in msg


def test_out_of_range_bounds_are_refused_at_config_time() -> None:
    with pytest.raises(ConfigError) as err:
        load_space_spec(
            "ties_layerwise", overrides={"params": {"density": {"low": -0.5, "high": 1.5}}}
        )
    assert "params.density: bounds [-0.5, 1.5] leave density's allowed range [0, 1]" in str(
        err.value
    )
    with pytest.raises(ConfigError, match=r"fixed\.int8_mask: .*valid boolean"):
        load_space_spec("ties_layerwise", overrides={"fixed": {"int8_mask": "sometimes"}})


@pytest.mark.parametrize(
    ("method", "params", "n_sources", "names"),
    [
        ("sce", {"select_topk": {"low": 0.1, "high": 1.0}}, 3, ["g0.all.all.select_topk"]),
        (
            "nuslerp",
            {"weight": {"low": 0.1, "high": 1.0}},
            2,
            ["g0.all.source0.weight", "g0.all.source1.weight"],
        ),
        (
            "multislerp",
            {"weight": {"low": 0.1, "high": 1.0}},
            3,
            ["g0.all.source0.weight", "g0.all.source1.weight", "g0.all.source2.weight"],
        ),
        ("nearswap", {"t": {"low": 0.0001, "high": 0.01}}, 1, ["g0.all.all.t"]),
        ("ramplus_tl", {"r": {"low": 0.0, "high": 0.5}}, 2, ["g0.all.all.r"]),
    ],
)
def test_new_methods_are_searchable(
    method: str, params: dict[str, Any], n_sources: int, names: list[str], tiny_models: Any
) -> None:
    spec = load_space_spec(
        {"name": method, "method": method, "layer_granularity": 4, "params": params}
    )
    sources = [str(tiny_models[k]) for k in ("ft_a", "ft_b", "ft_c")][:n_sources]
    space = SearchSpace(spec=spec, num_layers=4, base=str(tiny_models.base), sources=sources)
    assert space.names_in_order == names
    recipe = space.decode(space.x0())
    check_recipe(recipe)
    next(iter_merged_tensors(recipe, pool_for_recipe(recipe)))  # it merges


def test_source_counts_come_from_the_method_contract(tiny_models: Any) -> None:
    sources = [str(tiny_models[k]) for k in ("ft_a", "ft_b", "ft_c")]
    spec = load_space_spec(
        {"name": "n", "method": "nuslerp", "params": {"weight": {"low": 0.1, "high": 1.0}}}
    )
    with pytest.raises(SearchError, match="at most 2 source"):
        SearchSpace(spec=spec, num_layers=4, base=str(tiny_models.base), sources=sources)
    with pytest.raises(SearchError, match="at least 2 source"):
        SearchSpace(spec=spec, num_layers=4, base=str(tiny_models.base), sources=sources[:1])
