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


@pytest.fixture(autouse=True)
def _fuse_small_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tensors are small; make the compiled kernel take them anyway."""
    monkeypatch.setattr(_fused, "FUSED_MIN_NUMEL", 0)


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
    assert _fused._KERNELS, f"the fused kernel was not used: {_fused.fused_status()}"
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


@pytest.mark.parametrize(
    ("densities", "rescale"),
    [((1.0, 0.5), False), ((1.0, 0.5, 1.0), False), ((0.3, 1.0), True)],
)
def test_dare_ties_with_a_keep_all_source_stays_on_the_fused_path(
    monkeypatch: pytest.MonkeyPatch, densities: tuple[float, ...], rescale: bool
) -> None:
    """A source with density 1 keeps everything and has no noise: the noise kernel takes it
    (issue 11: its missing noise crashed the compile and turned the fast path off for good)."""
    gen = torch.Generator().manual_seed(2)
    n = len(densities)
    base = torch.randn(40, 33, generator=gen)
    deltas = torch.randn(n, 40, 33, generator=gen) * 0.01
    weights = [1.0, 0.7, 0.4][:n]
    args = MergeArgs(
        globals={"normalize": False, "rescale": rescale, "lambda": 1.0, "int8_mask": False},
        inputs=[{"weight": w, "density": d} for w, d in zip(weights, densities, strict=True)],
    )
    monkeypatch.setattr(_fused, "_DISABLED", {})
    _fused._KERNELS.clear()
    fused = dare_ties(base, deltas, args, seed=1, tensor_name="x")
    assert _fused.fused_status() == {} and _fused._KERNELS
    eager = _eager(monkeypatch, dare_ties, base, deltas, args, seed=1, tensor_name="x")
    assert (fused - eager).abs().max() <= 1e-6
    dense = base + sum(w * d for w, d in zip(weights, deltas, strict=True))
    assert not torch.allclose(fused, dense)  # something was dropped


def test_a_failing_compile_disables_that_kernel_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from torch._inductor.exc import InvalidCxxCompiler

    def no_compiler(kind: str):  # type: ignore[no-untyped-def]
        def run(*_a, **_k):  # type: ignore[no-untyped-def]
            raise InvalidCxxCompiler()

        return run

    base, deltas = torch.randn(8, 8), torch.randn(2, 8, 8) * 0.01
    args = _args([1.0, 1.0], [0.5, 0.5], normalize=True)
    monkeypatch.setattr(_fused, "_compiled", no_compiler)
    monkeypatch.setattr(_fused, "_DISABLED", {})
    with caplog.at_level("WARNING", logger=_fused.__name__):
        out = ties(base, deltas, args)
    assert list(_fused.fused_status()) == ["consensus"]
    assert "No working C++ compiler" in _fused.fused_status()["consensus"]
    assert "cannot be compiled" in caplog.text and "C++ compiler" in caplog.text
    assert not _fused.fused_enabled()
    eager = _eager(monkeypatch, ties, base, deltas, args)
    assert torch.equal(out, eager)


def test_a_bug_in_the_kernel_is_raised_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only compile/backend errors fall back; anything else propagates and disables nothing."""

    def buggy(kind: str):  # type: ignore[no-untyped-def]
        def run(*_a, **_k):  # type: ignore[no-untyped-def]
            raise TypeError("a bug")

        return run

    base, deltas = torch.randn(8, 8), torch.randn(2, 8, 8) * 0.01
    monkeypatch.setattr(_fused, "_compiled", buggy)
    monkeypatch.setattr(_fused, "_DISABLED", {})
    with pytest.raises(TypeError, match="a bug"):
        ties(base, deltas, _args([1.0, 1.0], [0.5, 0.5], normalize=True))
    assert _fused.fused_status() == {} and _fused.fused_enabled()


def test_small_tensors_take_the_eager_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_fused, "FUSED_MIN_NUMEL", 1 << 16)
    _fused._KERNELS.clear()
    base, deltas = torch.randn(8, 8), torch.randn(2, 8, 8) * 0.01
    ties(base, deltas, _args([1.0, 1.0], [0.5, 0.5], normalize=True))
    assert not _fused._KERNELS


@pytest.mark.parametrize("name", ["ties", "breadcrumbs_ties"])
def test_fused_rank_cuts_equal_eager(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Quantized task vectors tie at every cut: the kernel keeps lo <= rank < hi."""
    from evomerge.merge.methods import get_method
    from evomerge.merge.methods._sparsify import magnitude_keep

    gen = torch.Generator().manual_seed(4)
    base = torch.randn(300, 257, generator=gen)
    deltas = torch.randint(-6, 7, (3, 300, 257), generator=gen).float() * 1e-3
    assert magnitude_keep(deltas[0].reshape(-1), None, 0.4).kind == "rank"
    fn = get_method(name).fn
    inputs = [
        {"weight": w, "density": d, "gamma": 0.1} for w, d in ((0.7, 0.4), (0.5, 0.6), (0.9, 0.3))
    ]
    args = MergeArgs(
        globals={"normalize": True, "rescale": False, "lambda": 1.0, "int8_mask": False},
        inputs=inputs,
    )
    _fused._KERNELS.clear()
    fused = fn(base, deltas, args)
    assert _fused._KERNELS
    eager = _eager(monkeypatch, fn, base, deltas, args)
    assert (fused - eager).abs().max() <= 1e-6
