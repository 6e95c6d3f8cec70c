"""The magnitude cuts keep exactly mergekit's coordinates, ties at the cut included.

mergekit 0.1.5 is the oracle (``mergekit.sparsify.magnitude`` / ``magnitude_outliers``):
with ties the kept coordinates depend on torch's (unstable) sort, and ours must be the
same ones, with a precomputed order (the engine) and without (a one-off merge).
"""

from __future__ import annotations

import math

import pytest
import torch
from mergekit import sparsify as mk

from evomerge.merge.methods import CHUNK, SourceAux, Workspace
from evomerge.merge.methods._aux import (
    ascending_rank,
    magnitude_rank,
    make_noise,
    noise_l1_table,
    row_rank,
)
from evomerge.merge.methods._sparsify import (
    Keep,
    emit_kept,
    kept_at,
    magnitude_keep,
    outlier_keep,
)


def _quantized(n: int, levels: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Few distinct magnitudes (runs of ties at every cut), signs mixed, zeros included."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(-levels, levels + 1, (n,), generator=g) * 0.01).to(dtype)


def _mask(flat: torch.Tensor, keep: object) -> torch.Tensor:
    idx = torch.arange(flat.numel())
    return kept_at(flat, idx, keep, SourceAux()) & (flat != 0)  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("density", [0.01, 0.3, 0.5, 0.93])
@pytest.mark.parametrize("levels", [1, 5, 40])
def test_top_k_keeps_mergekits_coordinates(dtype: torch.dtype, density: float, levels: int) -> None:
    flat = _quantized(2 * CHUNK + 321, levels, seed=levels, dtype=dtype)
    theirs = mk.magnitude(flat, density) != 0
    for ranks in (None, magnitude_rank(flat)):
        keep = magnitude_keep(flat, ranks, density)
        assert torch.equal(_mask(flat, keep), theirs), (ranks is None, keep)


@pytest.mark.parametrize(
    ("density", "gamma"), [(0.4, 0.15), (0.2, 0.1), (0.9, 0.05), (0.5, 0.0), (0.05, 0.9)]
)
@pytest.mark.parametrize("levels", [1, 3, 40])
def test_outlier_cuts_keep_mergekits_coordinates(density: float, gamma: float, levels: int) -> None:
    """With levels=1 (values -0.01, 0, 0.01) both cuts can fall in one run of ties."""
    flat = _quantized(CHUNK + 4321, levels, seed=100 + levels, dtype=torch.bfloat16)
    theirs = mk.magnitude_outliers(flat, density, gamma=gamma) != 0
    for ranks in (None, ascending_rank(flat)):
        keep = outlier_keep(flat, ranks, density, gamma)
        assert torch.equal(_mask(flat, keep), theirs), (ranks is None, keep)


def test_ties_at_the_cut_are_not_resolved_by_position() -> None:
    """The check above is not vacuous: a stable (by position) tie-break keeps other coordinates."""
    flat = _quantized(5000, 3, seed=7)
    k = int(0.5 * flat.numel())
    stable = torch.zeros(flat.numel(), dtype=torch.bool)
    stable[torch.argsort(flat.abs(), descending=True, stable=True)[:k]] = True
    theirs = mk.magnitude(flat, 0.5) != 0
    assert not torch.equal(stable & (flat != 0), theirs)
    keep = magnitude_keep(flat, None, 0.5)
    assert keep.kind == "rank"  # the tie needed mergekit's sort


def test_no_tie_needs_no_sort(monkeypatch: pytest.MonkeyPatch) -> None:
    """Distinct magnitudes: the linear-time cut alone, no sort, the same coordinates."""
    from evomerge.merge.methods import _sparsify

    def no_sort(*_: object, **__: object) -> torch.Tensor:
        raise AssertionError("sorted although no tie straddles the cut")

    monkeypatch.setattr(_sparsify, "window_ranks", no_sort)
    flat = torch.randn(10_000, generator=torch.Generator().manual_seed(3))
    keep = magnitude_keep(flat, None, 0.3)
    assert keep.kind == "mag"
    assert torch.equal(_mask(flat, keep), mk.magnitude(flat, 0.3) != 0)
    keep = outlier_keep(flat, None, 0.3, 0.1)
    assert torch.equal(_mask(flat, keep), mk.magnitude_outliers(flat, 0.3, gamma=0.1) != 0)


def test_edges() -> None:
    flat = torch.tensor([0.5, -3.0, 2.0, 0.1, -1.0])
    keep = magnitude_keep(flat, None, 0.4)
    assert keep.kind == "mag" and keep.above == 1.0
    assert magnitude_keep(flat, None, 1.0).kind == "all"
    assert magnitude_keep(flat, None, 0.0).kind == "none"
    assert magnitude_keep(torch.zeros(4), None, 0.5).kind == "mag"  # zeros only: nothing to add
    assert outlier_keep(flat, None, 0.0, 0.1).kind == "none"


def test_della_ranks_break_ties_as_mergekit_does() -> None:
    """DELLA's keep probability grows with the rank of |delta| in its row; with ties the
    rank each coordinate gets is the one mergekit's sort gives it (not its position)."""
    from evomerge.merge.methods import row_rank

    d = _quantized(64 * 300, 2, seed=5, dtype=torch.bfloat16).view(64, 300)
    theirs = torch.argsort(torch.argsort(d.abs(), dim=1), dim=1)  # mergekit's ranks, 0-based
    assert torch.equal(row_rank(d).view(64, 300).long(), theirs)
    by_position = torch.argsort(torch.argsort(d.abs(), dim=1, stable=True), dim=1)
    assert not torch.equal(by_position, theirs)  # the ties matter


def test_a_tie_found_by_the_selection_falls_back_to_mergekits_sort() -> None:
    """Mostly distinct magnitudes (no sorting up front), but a run of ties right at the cut."""
    from evomerge.merge.methods._sparsify import _quantized

    g = torch.Generator().manual_seed(11)
    flat = torch.randn(20_000, generator=g)
    order = torch.argsort(flat.abs(), descending=True)
    k = int(0.3 * flat.numel())
    tied = order[k - 50 : k + 50]  # 100 coordinates around the cut share one magnitude
    flat[tied] = torch.sign(flat[tied]) * flat.abs()[order[k]]
    assert not _quantized(flat)
    keep = magnitude_keep(flat, None, 0.3)
    assert keep.kind == "rank" and keep.hi == int(0.3 * flat.numel())
    assert torch.equal(_mask(flat, keep), mk.magnitude(flat, 0.3) != 0)
    keep = outlier_keep(flat, None, 0.2, 0.3)  # drops the 6000 largest: the upper cut in the run
    assert keep.kind == "rank"
    assert torch.equal(_mask(flat, keep), mk.magnitude_outliers(flat, 0.2, gamma=0.3) != 0)


def test_dare_and_della_chunks_keep_what_the_plain_rule_keeps() -> None:
    """The chunked kernel (``emit_kept``, what merges run) and the plain rule (``kept_at``,
    what the tests compare masks with) agree on DARE's ``noise < threshold`` and DELLA's
    ``noise < a + b * row_rank``, chunk borders included."""
    n = 1000
    g = torch.Generator().manual_seed(0)
    flat = torch.randn(n, generator=g)
    aux = SourceAux(
        noise=make_noise(n, seed=0, tensor_name="t", source_key="s"),
        row_rank=row_rank(flat.reshape(10, 100)).reshape(-1),
    )
    ws = Workspace()
    for keep in (Keep("noise", threshold=-10_000), Keep("della", a=-30_000.0, b=600.0)):
        dst = torch.full((n,), math.nan)
        for s in range(0, n, 300):
            e = min(n, s + 300)
            emit_kept(dst[s:e], flat[s:e], keep, aux, s, e, ws)
        mask = kept_at(flat, torch.arange(n), keep, aux)
        assert 0.1 * n < int(mask.sum()) < 0.9 * n, keep.kind
        assert torch.equal(dst, flat * mask), keep.kind


def test_the_noise_l1_table_spans_every_chunk() -> None:
    """DARE's rescale table over a tensor of more than one precomputation chunk (2**20):
    ``table[T]`` is the L1 norm of the elements with ``noise + 32768 < T``."""
    n = (1 << 21) + 4321  # three chunks, the last one partial
    flat = torch.randn(n, generator=torch.Generator().manual_seed(1))
    noise = make_noise(n, seed=3, tensor_name="t", source_key="s")
    table = noise_l1_table(flat, noise)
    assert table.shape == (65537,) and table[0] == 0
    mag = flat.abs().double()
    for t in (1, 20_000, 32_768, 65_536):
        want = float(mag[noise.long() + 32768 < t].sum())
        assert float(table[t]) == pytest.approx(want, rel=1e-5), t
