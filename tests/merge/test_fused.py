"""The compiled single-pass consensus kernel equals the eager path (ties, dare_ties)."""

from __future__ import annotations

import pytest
import torch

from evomerge.merge.methods import _fused
from evomerge.merge.methods._spec import MergeArgs
from evomerge.merge.methods._task_arithmetic import dare_ties, ties


def _args(
    weights: list[float], densities: list[float], *, normalize: bool, lam: float = 1.0
) -> MergeArgs:
    return MergeArgs(
        globals={"normalize": normalize, "rescale": False, "lambda": lam, "int8_mask": False},
        inputs=[{"weight": w, "density": d} for w, d in zip(weights, densities, strict=True)],
    )


def _eager(monkeypatch: pytest.MonkeyPatch, fn, *a, **kw) -> torch.Tensor:  # type: ignore[no-untyped-def]
    with monkeypatch.context() as m:
        m.setenv("EVOMERGE_FUSED", "0")
        return fn(*a, **kw)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_ties_equals_eager(
    monkeypatch: pytest.MonkeyPatch, normalize: bool, dtype: torch.dtype
) -> None:
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(37, 29, generator=gen).to(dtype)
    deltas = (torch.randn(3, 37, 29, generator=gen) * 0.01).to(dtype)
    deltas[0, :5] = 0.02  # a run of ties in magnitude straddling the top-k cut
    deltas[1, 3] = 0.0
    args = _args([0.7, -0.4, 1.0], [0.3, 0.5, 1.0], normalize=normalize, lam=0.9)
    _fused._KERNELS.clear()
    fused = ties(base, deltas, args, tensor_name="t")
    assert _fused._KERNELS, f"the fused kernel was not used: {_fused._DISABLED}"
    eager = _eager(monkeypatch, ties, base, deltas, args, tensor_name="t")
    assert fused.dtype == dtype
    torch.testing.assert_close(
        fused.float(), eager.float(), rtol=0, atol=1e-6 if dtype == torch.float32 else 1e-2
    )
    if dtype == torch.float32:
        assert (fused - eager).abs().max() <= 1e-6


def test_fused_dare_ties_equals_eager_and_is_seeded(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(64, 48, generator=gen)
    deltas = torch.randn(2, 64, 48, generator=gen) * 0.01
    args = _args([0.5, 0.8], [0.4, 0.6], normalize=True)
    _fused._KERNELS.clear()
    a = dare_ties(base, deltas, args, seed=3, tensor_name="x")
    assert _fused._KERNELS
    b = dare_ties(base, deltas, args, seed=3, tensor_name="x")
    assert torch.equal(a, b)
    eager = _eager(monkeypatch, dare_ties, base, deltas, args, seed=3, tensor_name="x")
    assert (a - eager).abs().max() <= 1e-6
    assert not torch.equal(a, dare_ties(base, deltas, args, seed=4, tensor_name="x"))


def test_a_failing_compile_falls_back_to_eager(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_a, **_k):  # type: ignore[no-untyped-def]
        raise RuntimeError("no compiler")

    base, deltas = torch.randn(8, 8), torch.randn(2, 8, 8) * 0.01
    args = _args([1.0, 1.0], [0.5, 0.5], normalize=True)
    monkeypatch.setattr(_fused, "_compiled", boom)
    monkeypatch.setattr(_fused, "_DISABLED", [])
    _fused._KERNELS.clear()
    out = ties(base, deltas, args)
    assert _fused._DISABLED and "no compiler" in _fused._DISABLED[0]
    assert not _fused.fused_enabled()
    eager = _eager(monkeypatch, ties, base, deltas, args)
    assert torch.equal(out, eager)
