"""LayerPath: validation, plain-data round trip; the sources' layer compatibility checks."""

from __future__ import annotations

import json

import pytest

from evomerge.exceptions import ConfigError
from evomerge.merge import check_layers, layer_problems, open_path_sources
from evomerge.merge.path import LayerPath, PathSlot, PathSource
from evomerge.merge.recipe import MergeRecipe


def _path(**kw: object) -> LayerPath:
    data: dict[str, object] = {
        "sources": {"a": {"model": "/m/a"}, "b": {"model": "/m/b"}},
        "embedding": "a",
        "slots": [["a", 0], ["b", 1, 0.5], ["b", 1, 2.0]],
    }
    data.update(kw)
    return LayerPath.from_dict(data)


def test_round_trip_through_json() -> None:
    recipe = MergeRecipe.from_mergekit_dict(
        {
            "models": [{"model": "/m/a", "parameters": {"weight": 0.3}}, {"model": "/m/b"}],
            "merge_method": "linear",
            "dtype": "float32",
        }
    )
    path = _path(sources={"a": {"model": "/m/a"}, "b": {"recipe": recipe.to_mergekit_dict()}})
    again = LayerPath.from_dict(json.loads(json.dumps(path.to_dict())))
    assert again == path
    assert again.sources["b"].recipe == recipe
    assert LayerPath.is_path_data(path.to_dict())
    assert again.slots[1] == PathSlot(source="b", layer=1, scale=0.5)
    assert path.used_sources() == ["a", "b"]
    assert "b[1]*0.5" in path.describe()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"embedding": "z"}, "embedding"),
        ({"slots": [["a", 0], ["q", 1]]}, "slots.1.source"),
        ({"slots": [["a", 0, 0.0]]}, "slots.0.scale"),
        ({"slots": [["a", 0, -1.0]]}, "slots.0.scale"),
        ({"slots": []}, "slots"),
        ({"sources": {"a": {}}}, "sources.a"),
    ],
)
def test_bad_paths_name_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        _path(**change)
    assert field in str(err.value)


def test_compatible_sources_pass(dataflow_models) -> None:
    w = open_path_sources(
        {
            "a": PathSource(model=str(dataflow_models.a)),
            "c": PathSource(model=str(dataflow_models.c)),
        }
    )
    assert layer_problems(w, "a") == []
    assert w["c"].num_layers == 6


@pytest.mark.parametrize(
    ("override", "word"),
    [({"hidden_size": 48}, "hidden_size"), ({"num_key_value_heads": 4}, "num_key_value_heads")],
)
def test_incompatible_sources_are_a_config_error(tmp_path, dataflow_models, override, word) -> None:
    from evomerge.testing.tiny import build_tiny_model

    odd = build_tiny_model(tmp_path / "odd", seed=1, **override)
    w = open_path_sources(
        {"a": PathSource(model=str(dataflow_models.a)), "odd": PathSource(model=str(odd))}
    )
    with pytest.raises(ConfigError) as err:
        check_layers(w, "a", field="space.sources")
    msg = str(err.value)
    assert msg.startswith("space.sources:") and word in msg and "'odd'" in msg


def test_unsupported_family_is_named(tmp_path) -> None:
    from evomerge.testing.tiny import build_tiny_model

    g = build_tiny_model(tmp_path / "g", model_type="gpt2", seed=1)
    w = open_path_sources({"g": PathSource(model=str(g))})
    (problem,) = layer_problems(w, "g")
    assert "gpt2" in problem and "llama" in problem
