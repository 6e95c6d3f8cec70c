"""TIES trimming: the tie rule, the exact global radix selection, mergekit's magnitude."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evomerge.analysis._trim import (
    ThresholdFinder,
    TieBudget,
    apply_trim,
    keep_count,
    tensor_threshold,
)


def trim_tensor(x: torch.Tensor, density: float) -> torch.Tensor:
    thr = tensor_threshold(x.abs(), density)
    return apply_trim(x.clone(), TieBudget(thr) if thr is not None else None)


def trim_global(tensors: list[torch.Tensor], density: float) -> list[torch.Tensor]:
    finder = ThresholdFinder(density=density)
    for t in tensors:
        finder.add_high(t.abs())
    if finder.needs_second_pass():
        for t in reversed(tensors):  # pass 2 does not depend on order
            finder.add_low(t.abs())
    thr = finder.result()
    budget = TieBudget(thr) if thr is not None else None
    return [apply_trim(t.clone(), budget) for t in tensors]


def stable_topk_reference(flat: np.ndarray, density: float) -> np.ndarray:
    """Keep the first k of a stable descending sort of |x| (the documented rule)."""
    n = flat.size
    k = n if density >= 1 else max(1, int(density * n))
    keep = np.argsort(-np.abs(flat), kind="stable")[:k]
    out = np.zeros_like(flat)
    out[keep] = flat[keep]
    return out


def test_keep_count_follows_mergekit() -> None:
    assert keep_count(10, 0.25) == 2
    assert keep_count(10, 0.01) == 1  # at least one entry survives
    assert keep_count(10, 1.0) == 10
    assert keep_count(0, 0.5) == 0


def test_tensor_scope_hand_computed_with_tie() -> None:
    x = torch.tensor([1.0, 2.0, 0.0, -1.0, 0.0, 3.0])
    # k = 3: 3 and 2 are kept; 1 and -1 tie for the last place: the lower index wins
    assert trim_tensor(x, 0.5).tolist() == [1.0, 2.0, 0.0, 0.0, 0.0, 3.0]
    y = torch.tensor([-1.0, 2.0, 0.0, -2.0, 0.0, -4.0])
    assert trim_tensor(y, 0.5).tolist() == [0.0, 2.0, 0.0, -2.0, 0.0, -4.0]


def test_trim_keeping_zeros_changes_nothing() -> None:
    x = torch.tensor([0.0, -1.0, 0.0, 0.0, 5.0, 0.0])  # k = 3 > 2 non-zeros: threshold is 0
    assert trim_tensor(x, 0.5).tolist() == x.tolist()
    z = torch.zeros(5)
    assert trim_tensor(z, 0.2).tolist() == [0.0] * 5


def test_density_one_trims_nothing() -> None:
    x = torch.randn(7)
    assert torch.equal(trim_tensor(x, 1.0), x)
    assert trim_global([x], 1.0)[0].tolist() == x.tolist()


def test_global_scope_hand_computed_ties_follow_tensor_order() -> None:
    t1 = torch.tensor([1.0, 2.0, 0.0, -1.0, 0.0, 3.0])
    t2 = torch.tensor([2.0, -2.0])
    # n = 8, k = int(0.375 * 8) = 3: the 3, then two of the three 2s in analysis order
    a, b = trim_global([t1, t2], 0.375)
    assert a.tolist() == [0.0, 2.0, 0.0, 0.0, 0.0, 3.0]
    assert b.tolist() == [2.0, 0.0]
    # k = 4: all three tied 2s fit
    a, b = trim_global([t1, t2], 0.5)
    assert a.tolist() == [0.0, 2.0, 0.0, 0.0, 0.0, 3.0]
    assert b.tolist() == [2.0, -2.0]


@pytest.mark.parametrize("density", [0.01, 0.1, 0.37, 0.5, 0.9])
@pytest.mark.parametrize("tied", [False, True])
def test_both_scopes_match_stable_sort_reference(density: float, tied: bool) -> None:
    rng = np.random.default_rng(int(density * 100) + tied)
    shapes = [(5, 7), (13,), (3, 4, 2), (1,)]
    if tied:  # few distinct magnitudes: ties at the cut almost surely
        arrays = [rng.integers(-3, 4, size=s).astype(np.float32) for s in shapes]
    else:  # magnitudes over many binades, so the radix bins are uneven
        arrays = [
            (rng.standard_normal(s) * 10.0 ** rng.integers(-8, 3, size=s)).astype(np.float32)
            for s in shapes
        ]
    tensors = [torch.from_numpy(a) for a in arrays]
    for a, t in zip(arrays, tensors, strict=True):
        np.testing.assert_array_equal(
            trim_tensor(t, density).numpy(),
            stable_topk_reference(a.ravel(), density).reshape(a.shape),
        )
    flat_ref = stable_topk_reference(np.concatenate([a.ravel() for a in arrays]), density)
    got = np.concatenate([t.numpy().ravel() for t in trim_global(tensors, density)])
    np.testing.assert_array_equal(got, flat_ref)


def test_global_threshold_is_exact_kth_largest() -> None:
    rng = np.random.default_rng(3)
    arrays = [np.abs(rng.standard_normal(n)).astype(np.float32) * 1e-3 for n in (1000, 20000, 7)]
    allv = np.sort(np.concatenate(arrays))[::-1]
    finder = ThresholdFinder(density=0.123)
    for a in arrays:
        finder.add_high(torch.from_numpy(a))
    assert finder.needs_second_pass()
    for a in arrays:
        finder.add_low(torch.from_numpy(a))
    thr = finder.result()
    assert thr is not None
    k = int(0.123 * allv.size)
    assert thr.k == k
    assert thr.value == float(allv[k - 1])
    assert thr.ties_to_keep == k - int((allv > allv[k - 1]).sum())


def test_matches_mergekit_magnitude_without_ties() -> None:
    from mergekit.sparsify import magnitude

    gen = torch.Generator().manual_seed(0)
    for shape, density in [((16, 8), 0.2), ((33,), 0.5), ((4, 4, 4), 0.05)]:
        x = torch.randn(shape, generator=gen)
        assert torch.equal(trim_tensor(x, density), magnitude(x.clone(), density))
