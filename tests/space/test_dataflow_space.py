"""The data-flow space: spec errors, genome <-> path decoding, encoding, constraints."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from evomerge._yaml import validate_model
from evomerge.exceptions import ConfigError, SearchError
from evomerge.merge.path import LayerPath, PathSlot, PathSource
from evomerge.space._dataflow import DataflowSpace
from evomerge.space._dataflow_spec import DataflowSpec

SOURCES = {"a": PathSource(model="/m/a"), "b": PathSource(model="/m/b")}


def spec(**kw: Any) -> DataflowSpec:
    return validate_model(DataflowSpec, {"type": "dataflow", **kw}, source="run.yaml")


def space(layers: dict[str, int] | None = None, **kw: Any) -> DataflowSpace:
    return DataflowSpace(spec=spec(**kw), sources=SOURCES, num_layers=layers or {"a": 4, "b": 4})


def path(*steps: tuple[str, int] | tuple[str, int, float], emb: str = "a") -> LayerPath:
    slots = tuple(
        PathSlot(source=s[0], layer=s[1], scale=s[2] if len(s) > 2 else 1.0) for s in steps
    )  # type: ignore[misc]
    return LayerPath(sources=SOURCES, embedding=emb, slots=slots)


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        ({"scales": {"low": 0.0}}, "scales", "positive"),
        ({"scales": {"low": -1.0, "high": 1.0, "init": 0.5}}, "scales", "positive"),
        ({"repetitions": 0}, "repetitions", "r >= 1"),
        ({"min_path_length": 0}, "min_path_length", "empty"),
        ({"max_path_length": 1, "fix_ends": True}, "<root>", "empty or impossible"),
        ({"sources": ["a", "b"], "embedding": "z"}, "<root>", "not among the sources"),
        ({"sources": ["a", "a"]}, "<root>", "distinct"),
        (
            {"sources": [{"name": "p", "recipe": "x.yaml", "run": "runs/x"}]},
            "sources.0",
            "exactly one",
        ),
        ({"order": "random"}, "order", "stacked"),
    ],
)
def test_spec_errors_name_the_field(data: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        spec(**data)
    msg = str(err.value)
    assert msg.startswith("run.yaml:")
    line = next(x for x in msg.splitlines() if x.strip().startswith(field))
    assert words in line, msg


def test_every_error_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        spec(repetitions=0, min_path_length=0, scales={"low": 0})
    assert "3 invalid field(s)" in str(err.value)


def test_genome_layout_and_start_point() -> None:
    sp = space(repetitions=2)
    n_slots = 2 * 8
    slot_names = sp.names_in_order[:n_slots]
    assert slot_names[:5] == [
        "slot.r0.a.l0",
        "slot.r0.a.l1",
        "slot.r0.a.l2",
        "slot.r0.a.l3",
        "slot.r0.b.l0",
    ]
    assert slot_names[8] == "slot.r1.a.l0"
    scale_genes = [g for g in sp.dimensions if g.kind == "scale"]
    # every ordered pair of the 8 layers (r=2 lets any follow any), minus the 6 natural steps
    assert len(scale_genes) == 8 * 8 - 6
    assert all(g.bounds.low == 0.5 and g.bounds.high == 2.0 for g in scale_genes)
    assert sp.decode(sp.x0()) == sp.start_path() == path(("a", 0), ("a", 1), ("a", 2), ("a", 3))
    with pytest.raises(SearchError, match=f"genome has 3 values, space dataflow needs {sp.dim}"):
        sp.decode([0.0] * 3)


def test_decode_keeps_on_slots_in_order_with_scales() -> None:
    sp = space(repetitions=2)
    x = sp.x0()
    params = sp.to_params(x)
    for name in ("slot.r0.a.l0", "slot.r0.a.l1", "slot.r0.b.l2", "slot.r1.b.l2", "slot.r1.a.l3"):
        params[name] = 0.3
    for name in ("slot.r0.a.l2", "slot.r0.a.l3"):
        params[name] = -0.2
    params["scale.a.l1.b.l2"] = 0.8
    params["scale.b.l2.a.l3"] = 1.9
    params["scale.a.l3.b.l2"] = 1.5
    params["scale.b.l2.b.l2"] = 0.6  # not on this path
    got = sp.decode(sp.from_params(params))
    # stacked order: rep 1 holds a's layers before b's, so a[3] precedes the second b[2]
    assert got == path(("a", 0), ("a", 1), ("b", 2, 0.8), ("a", 3, 1.9), ("b", 2, 1.5))
    np.testing.assert_array_equal(sp.decode(sp.encode(got)).slots, got.slots)


def test_scales_off_gives_ones_and_no_genes() -> None:
    sp = space(repetitions=1, scales={"search": False})
    assert all(g.kind == "slot" for g in sp.dimensions) and sp.dim == 8
    x = np.full(8, 0.7)
    assert all(s.scale == 1.0 for s in sp.decode(x).slots)
    with pytest.raises(SearchError, match="does not scale"):
        sp.encode(path(("a", 0), ("b", 2, 0.7)))


def test_fix_ends_and_length_limits() -> None:
    sp = space(fix_ends=True, max_path_length=4)
    assert "slot.r0.a.l0" not in sp.names_in_order and "slot.r0.a.l3" not in sp.names_in_order
    everything_on = sp.decode(np.ones(sp.dim))
    assert everything_on.slots[0].layer == 0 and everything_on.slots[-1] == PathSlot(
        source="a", layer=3, scale=1.0
    )
    assert len(everything_on) == 4  # max_path_length keeps the two largest searched slots
    x = -np.ones(sp.dim)
    assert [(s.source, s.layer) for s in sp.decode(x).slots] == [("a", 0), ("a", 3)]
    with pytest.raises(SearchError, match="fix_ends"):
        sp.encode(path(("b", 0), ("a", 3)))


def test_min_length_turns_on_the_largest_indicators() -> None:
    sp = space(min_path_length=2, scales={"search": False})
    x = np.full(sp.dim, -0.9)
    x[sp.names_in_order.index("slot.r0.b.l3")] = -0.1
    x[sp.names_in_order.index("slot.r0.a.l1")] = -0.5
    assert [(s.source, s.layer) for s in sp.decode(x).slots] == [("a", 1), ("b", 3)]


def test_interleaved_order_and_unexpressible_paths() -> None:
    sp = space(order="interleaved", scales={"search": False})
    assert sp.names_in_order[:4] == ["slot.r0.a.l0", "slot.r0.b.l0", "slot.r0.a.l1", "slot.r0.b.l1"]
    p = path(("a", 0), ("b", 1), ("a", 2), ("b", 3))
    assert sp.decode(sp.encode(p)) == p
    with pytest.raises(SearchError, match="raise repetitions"):
        sp.encode(path(("a", 2), ("a", 1)))
    stacked = space(scales={"search": False})
    with pytest.raises(SearchError, match="raise repetitions"):
        stacked.encode(path(("b", 0), ("a", 1)))  # a's layers all come before b's


def test_encode_refuses_two_scales_for_one_transition() -> None:
    sp = space(repetitions=3)
    with pytest.raises(SearchError, match="occurs twice"):
        sp.encode(path(("a", 0), ("b", 1, 0.7), ("a", 0, 1.0), ("b", 1, 0.9)))


def test_sources_of_different_depth() -> None:
    sp = space(layers={"a": 2, "b": 3}, order="interleaved", scales={"search": False})
    assert sp.names_in_order == [
        "slot.r0.a.l0",
        "slot.r0.b.l0",
        "slot.r0.a.l1",
        "slot.r0.b.l1",
        "slot.r0.b.l2",
    ]


def test_every_gene_name_parses_back() -> None:
    from evomerge.space import parse_genome_name, parse_path_gene_name

    sp = DataflowSpace(
        spec=spec(repetitions=2),
        sources={"a-1": PathSource(model="/m/a"), "b_2": PathSource(model="/m/b")},
        num_layers={"a-1": 3, "b_2": 2},
    )
    for g in sp.dimensions:
        part = parse_path_gene_name(g.name)
        assert part is not None and str(part) == g.name and parse_genome_name(g.name) is None
        assert part.kind == g.kind and part.layer == g.layer
        assert (part.rep, part.src) == ((g.rep, None) if g.kind == "slot" else (None, g.src))
    assert parse_path_gene_name("g0.all.a.weight") is None
