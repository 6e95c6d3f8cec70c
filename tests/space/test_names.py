"""Genome parameter names: written by one function, read back by one function, exactly.

The report once re-parsed names with its own rule and showed a filter ``self_attn.q_proj``
as source ``q_proj.a``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from evomerge.report import ReportData, TrialRow
from evomerge.report._plots import recipe_heatmap
from evomerge.space import (
    GenomeName,
    SearchSpace,
    format_genome_name,
    load_space_spec,
    parse_genome_name,
)


def _space(filters: list[str], params: dict, method: str = "linear") -> SearchSpace:
    spec = load_space_spec(
        {
            "name": "t",
            "method": method,
            "layer_granularity": 2,
            "filters": filters,
            "params": params,
        }
    )
    names = ["a"] if method == "slerp" else ["a", "b-2"]  # slerp: the base and one source
    return SearchSpace(
        spec=spec, num_layers=4, base="/b", sources=[f"/{n}" for n in names], names=names
    )


@pytest.mark.parametrize(
    ("filters", "params", "method"),
    [
        (["self_attn.q_proj", "mlp"], {"weight": {"low": 0.1, "high": 1}}, "linear"),
        ([], {"weight": {"low": 0.1, "high": 1}, "base_weight": {"low": 0, "high": 0.5}}, "linear"),
        (["mlp.down_proj", "self_attn"], {"t": {"low": 0, "high": 1}}, "slerp"),
    ],
)
def test_every_dimension_name_parses_back_to_its_parts(filters, params, method) -> None:
    space = _space(filters, params, method)
    for d in space.dimensions:
        parts = parse_genome_name(d.name)
        assert parts is not None, d.name
        assert parts.group == d.group and parts.filter == d.filter
        if d.source is not None:
            assert parts.who == space.names[d.source] and parts.param == d.param
        elif d.param == "base_weight":
            assert (parts.who, parts.param) == ("base", "weight")
        else:
            assert (parts.who, parts.param) == ("all", d.param)
        assert str(parts) == d.name


def test_format_refuses_parts_that_could_not_be_read_back() -> None:
    assert (
        format_genome_name(3, "self_attn.q_proj", "a", "weight") == "g3.self_attn.q_proj.a.weight"
    )
    assert parse_genome_name("g3.self_attn.q_proj.a.weight") == GenomeName(
        3, "self_attn.q_proj", "a", "weight"
    )
    for bad in [(0, "mlp", "a.b", "weight"), (0, "mlp", "a", "we.ight"), (-1, "mlp", "a", "w")]:
        with pytest.raises(ValueError, match="bad genome name part"):
            format_genome_name(*bad)
    for not_a_name in ["x0", "g1.a.b", "gx.all.a.weight", "g1..a.weight", "layers.1.weight"]:
        assert parse_genome_name(not_a_name) is None


def test_report_heatmap_shows_dotted_filters_and_their_sources() -> None:
    space = _space(["self_attn.q_proj", "mlp"], {"weight": {"low": 0.1, "high": 1}})
    row = TrialRow(
        number=0,
        state="COMPLETE",
        values=[1.0],
        params=space.to_params(space.x0()),
        scores={},
        timings={},
        samples=[],
        error=None,
    )
    data = ReportData(
        name="t",
        run_dir=Path("."),
        sampler="cmaes",
        objective_names=["o"],
        directions=["maximize"],
        trials=[row],
        best=row,
        front=[row],
    )
    fig = recipe_heatmap(data)
    assert fig is not None
    labels = {t.get_text() for ax in fig.axes for t in ax.get_xticklabels()}
    assert labels >= {"self_attn.q_proj:a", "self_attn.q_proj:b-2", "mlp:a", "rest:b-2"}
    assert not any("q_proj.a" in label for label in labels)
