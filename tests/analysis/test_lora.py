"""Two LoRA adapters and their merged full-weight equivalents give the same figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from evomerge.analysis import analyze_pool
from evomerge.analysis._figures import flatten
from evomerge.pool import ModelPool


@pytest.mark.parametrize(
    ("density", "scope"), [(None, "tensor"), (0.5, "tensor"), (0.05, "global")]
)
def test_lora_and_merged_full_weights_agree(
    tiny_models: dict[str, Path], lora_models: dict[str, Path], density: float | None, scope: str
) -> None:
    base = tiny_models["base"]
    lora = analyze_pool(
        ModelPool.open(base, [lora_models["lora_a"], lora_models["lora_b"]]),
        density=density,
        trim_scope=scope,
    )
    full = analyze_pool(
        ModelPool.open(base, [lora_models["full_a"], lora_models["full_b"]]),
        density=density,
        trim_scope=scope,
    )
    assert lora.names == full.names == ["a", "b"]
    groups = [(lora.whole_model(), full.whole_model())]
    groups += [(lora.tensor_figures(i), full.tensor_figures(i)) for i in range(len(lora.tensors))]
    groups += list(zip(lora.per_layer().values(), full.per_layer().values(), strict=True))
    for got, want in groups:
        g, w = dict(flatten(got)), dict(flatten(want))
        assert g.keys() == w.keys()
        for k, v in w.items():
            if v is None or isinstance(v, int):  # counts and undefined ratios agree exactly
                assert g[k] == v, k
            else:  # base + delta rounded to float32 and subtracted again: ~1 ulp of the base
                assert g[k] == pytest.approx(v, rel=1e-5, abs=1e-9), k
    w = lora.whole_model()
    # the adapters overlap on v_proj only: conflicts exist but only there
    assert w["conflict_coords"] > 0
    assert {m for m, f in lora.per_module().items() if f["conflict_coords"]} == {"v"}
    assert w["per_model"]["a"]["unchanged_fraction"] > 0.5  # untargeted tensors are unchanged
