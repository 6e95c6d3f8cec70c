"""The linear-time top-k cut equals the sorted one, ties at the cut included."""

from __future__ import annotations

import pytest
import torch

from evomerge.merge.methods._aux import magnitude_order
from evomerge.merge.methods._sparsify import magnitude_keep, rank_range_keep, top_k_keep


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("density", [0.01, 0.3, 0.5, 0.99])
def test_top_k_keep_equals_the_sorted_cut(seed: int, density: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    # few distinct magnitudes: runs of ties at every cut, signs mixed, zeros included
    flat = (torch.randint(-4, 5, (2000,), generator=gen) * 0.25).to(torch.float32)
    k = max(1, int(density * flat.numel()))
    order = magnitude_order(flat)
    assert top_k_keep(flat, k) == rank_range_keep(flat, order, 0, k)
    assert magnitude_keep(flat, None, density) == magnitude_keep(flat, order, density)


def test_top_k_keep_without_ties_and_edges() -> None:
    flat = torch.tensor([0.5, -3.0, 2.0, 0.1, -1.0])
    keep = top_k_keep(flat, 2)
    assert keep.kind == "mag" and keep.below == 1.0 and keep.below_cut == -1
    assert top_k_keep(flat, 5).kind == "all"
