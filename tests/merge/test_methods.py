"""The pure merge methods: sparsification against mergekit's, DARE/DELLA statistics, registry."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from mergekit import sparsify as mk

import evomerge.registry
from evomerge.exceptions import ConfigError, MergeError, UnknownMethodError
from evomerge.merge.methods import (
    METHODS,
    MergeArgs,
    MergeMethod,
    Need,
    Scope,
    _aux,
    build_aux,
    get_method,
    list_methods,
)
from evomerge.merge.methods import _registry as registry
from evomerge.merge.methods._sparsify import bernoulli_keep, kept_l1
from evomerge.merge.methods._workspace import Workspace


def _args(method: str, inputs: list[dict[str, Any]], **globals_: Any) -> MergeArgs:
    m = get_method(method)
    g = {p.name: p.default for p in m.params if p.scope == Scope.GLOBAL} | globals_
    defaults = {p.name: p.default for p in m.params if p.scope != Scope.GLOBAL}
    return MergeArgs(globals=g, inputs=[defaults | i for i in inputs])


def _single(method: str, delta: torch.Tensor, seed: int = 0, **params: Any) -> torch.Tensor:
    """The sparsified (and rescaled) task vector alone: weight 1, base 0, no consensus effect."""
    glob = {k: params.pop(k) for k in ("rescale",) if k in params}
    base = torch.zeros_like(delta)
    return get_method(method).fn(
        base, delta[None], _args(method, [{"weight": 1.0, **params}], **glob), seed=seed
    )


@pytest.fixture(scope="module")
def delta() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    d = torch.randn((96, 128), generator=g) * 0.01
    d[torch.rand(d.shape, generator=g) < 0.1] = 0.0  # exact zeros, like a sparse fine-tune
    return d


@pytest.mark.parametrize("density", [0.0, 1e-5, 0.1, 0.5, 0.93, 1.0])
def test_magnitude_trimming_equals_mergekit(delta: torch.Tensor, density: float) -> None:
    ours = _single("ties", delta, density=density)
    assert torch.equal(ours, mk.magnitude(delta, density))
    kept = int((ours != 0).sum())
    nonzero = int((delta != 0).sum())
    assert kept == min(nonzero, 0 if density == 0 else max(1, int(density * delta.numel())))


def test_magnitude_trimming_keeps_mergekits_tied_coordinates() -> None:
    d = torch.tensor([0.5, -0.5, 0.2, 0.5, -0.1, 0.5])
    kept = _single(
        "ties", d, density=0.5
    )  # k = 3 of the four |0.5|: the ones mergekit's sort keeps
    assert torch.equal(kept, mk.magnitude(d, 0.5))
    outliers = _single("breadcrumbs", d, density=0.34, gamma=0.17)  # drop 1 largest, keep next 2
    assert torch.equal(outliers, mk.magnitude_outliers(d, 0.34, gamma=0.17))


@pytest.mark.parametrize(
    ("method", "density", "gamma", "levels"),
    [
        ("ties", 0.37, 0.0, 40),
        ("breadcrumbs", 0.4, 0.15, 40),
        ("breadcrumbs", 0.2, 0.1, 1),
        ("ties", 0.5, 0.0, 1),
    ],
)
def test_many_ties_across_chunks_keep_exactly_mergekits_coordinates(
    method: str, density: float, gamma: float, levels: int
) -> None:
    """Quantized task vectors (as bf16 checkpoints give) tie at the cuts; mergekit's sort decides.

    With ``levels=1`` (values -0.01, 0, 0.01) both breadcrumbs cuts fall inside one run of ties.
    """
    from evomerge.merge.methods import CHUNK

    g = torch.Generator().manual_seed(9)
    d = torch.randint(-levels, levels + 1, (3 * CHUNK + 123,), generator=g).float() * 0.01
    if method == "ties":
        expected = mk.magnitude(d, density)
    else:
        expected = mk.magnitude_outliers(d, density, gamma=gamma)
    params = {"density": density} | ({"gamma": gamma} if method == "breadcrumbs" else {})
    ours = _single(method, d, **params)
    assert torch.equal(ours, expected)
    assert int((ours != 0).sum()) == int((expected != 0).sum())
    with_rescale = _single(method, d, rescale=True, **params)
    assert int((with_rescale != 0).sum()) == int((expected != 0).sum())
    assert float(with_rescale.abs().sum()) == pytest.approx(float(d.abs().sum()), rel=1e-5)


@pytest.mark.parametrize(
    ("density", "gamma"), [(0.5, 0.01), (0.3, 0.2), (0.95, 0.1), (0.9, 0.0), (0.2, 0.0)]
)
def test_breadcrumbs_equal_mergekit(delta: torch.Tensor, density: float, gamma: float) -> None:
    ours = _single("breadcrumbs", delta, density=density, gamma=gamma)
    assert torch.equal(ours, mk.magnitude_outliers(delta, density, gamma=gamma))


@pytest.mark.parametrize("method", ["ties", "breadcrumbs"])
def test_rescale_matches_the_l1_norm_like_mergekit(delta: torch.Tensor, method: str) -> None:
    ours = _single(method, delta, density=0.3, rescale=True)
    if method == "ties":
        theirs = mk.magnitude(delta, 0.3, rescale_norm=mk.RescaleNorm.l1)
    else:
        theirs = mk.magnitude_outliers(delta, 0.3, rescale_norm=mk.RescaleNorm.l1, gamma=0.01)
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-9)
    assert float(ours.abs().sum()) == pytest.approx(float(delta.abs().sum()), rel=1e-5)


def _binomial_bound(p: float, n: int) -> float:
    return 5 * math.sqrt(p * (1 - p) / n)  # 5 sigma


@pytest.mark.parametrize("density", [0.1, 0.5, 0.8])
def test_dare_keeps_density_and_rescales_like_mergekit(density: float) -> None:
    d = torch.randn((256, 256), generator=torch.Generator().manual_seed(1))
    n = d.numel()
    ours = _single("dare_linear", d, density=density)  # rescale defaults to true
    torch.manual_seed(0)
    theirs = mk.bernoulli(d, density, rescale_norm=mk.RescaleNorm.l1)
    for kept in (ours, theirs):
        assert abs(float((kept != 0).float().mean()) - density) < _binomial_bound(density, n)
        assert float(kept.abs().sum()) == pytest.approx(
            float(d.abs().sum()), rel=1e-5
        )  # L1 preserved
    mask = ours != 0  # kept values are the task vector times one common factor
    factor = float(d.abs().sum() / d[mask].abs().sum())
    assert torch.allclose(ours[mask], d[mask] * factor, rtol=1e-5)
    plain = _single("dare_linear", d, density=density, rescale=False)
    assert torch.equal(plain, torch.where(mask, d, 0.0))


def test_dare_is_reproducible_for_a_seed_and_differs_across_seeds() -> None:
    d = torch.randn((64, 64), generator=torch.Generator().manual_seed(2))
    a, b, c = (_single("dare_ties", d, seed=s, density=0.5) for s in (7, 7, 8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_della_keep_probability_grows_with_row_rank_like_mergekit() -> None:
    density, eps = 0.5, 0.3
    d = torch.randn((512, 400), generator=torch.Generator().manual_seed(3))
    ours = _single("della_linear", d, density=density, epsilon=eps)
    torch.manual_seed(0)
    theirs = mk.della_magprune(d, density, eps, rescale_norm=mk.RescaleNorm.l1)
    rank = d.abs().argsort(dim=1).argsort(dim=1).float() / (d.shape[1] - 1)  # 0..1 within each row
    for lo, hi in [(0.0, 0.2), (0.4, 0.6), (0.8, 1.0)]:
        sel = (rank >= lo) & (rank <= hi)
        expected = float((density - eps + 2 * eps * rank[sel]).mean())
        bound = _binomial_bound(expected, int(sel.sum()))
        for kept in (ours, theirs):
            assert abs(float((kept[sel] != 0).float().mean()) - expected) < bound
    for kept in (ours, theirs):
        assert float(kept.abs().sum()) == pytest.approx(float(d.abs().sum()), rel=1e-5)


def test_precomputed_aux_gives_bit_identical_results(delta: torch.Tensor) -> None:
    base = torch.randn(delta.shape, generator=torch.Generator().manual_seed(4))
    deltas = torch.stack([delta, -0.5 * delta.flip(0), delta.roll(3, 1)])
    for name in ("ties", "dare_ties", "breadcrumbs_ties", "della", "task_arithmetic", "slerp"):
        method = get_method(name)
        k = 1 if name == "slerp" else 3
        inputs = [
            {"weight": 0.7, "density": 0.4},
            {"weight": 0.2, "density": 0.6},
            {"weight": 0.5},
        ][:k]
        args = _args(
            name,
            [{} for _ in range(k)] if name == "slerp" else inputs,
            **({"t": 0.3} if name == "slerp" else {}),
        )
        aux = [
            build_aux(method.needs, base, deltas[i], seed=5, tensor_name="w", source_key=str(i))
            for i in range(k)
        ]
        with_aux = method.fn(base, deltas[:k], args, aux=aux, seed=5, tensor_name="w")
        without = method.fn(base, list(deltas[:k]), args, seed=5, tensor_name="w")
        assert torch.equal(with_aux, without), name


def test_output_is_written_in_place_in_any_float_dtype(delta: torch.Tensor) -> None:
    base = torch.randn(delta.shape)
    args = _args("ties", [{"weight": 0.5, "density": 0.5}])
    expected = get_method("ties").fn(base, delta[None], args)
    out = torch.empty(delta.shape, dtype=torch.bfloat16)
    result = get_method("ties").fn(base, delta[None], args, out=out)
    assert result is out
    assert torch.equal(out, expected.to(torch.bfloat16))
    strided = torch.empty(delta.shape[::-1]).t()  # a non-contiguous out
    get_method("ties").fn(base, delta[None], args, out=strided)
    assert torch.equal(strided, expected)
    with pytest.raises(MergeError, match="shape"):
        get_method("ties").fn(base, delta[None], args, out=torch.empty(3))


def test_registry_is_explicit_and_lookup_lists_choices() -> None:
    assert list(METHODS) == [
        "linear",
        "task_arithmetic",
        "ties",
        "dare_linear",
        "dare_ties",
        "breadcrumbs",
        "breadcrumbs_ties",
        "della",
        "della_linear",
        "slerp",
        "passthrough",
        "sce",
        "model_stock",
        "nuslerp",
        "multislerp",
        "karcher",
        "nearswap",
        "arcee_fusion",
        "ram",
        "ramplus_tl",
    ]
    with pytest.raises(TypeError):
        METHODS["mine"] = METHODS["ties"]  # type: ignore[index]
    with pytest.raises(
        UnknownMethodError,
        match=r"Unknown merge method 'tie'\. Available: linear, task_arithmetic, ties",
    ):
        get_method("tie")
    assert get_method("ties").needs == {Need.MAGNITUDE_RANK}
    assert get_method("task_arithmetic").needs == set()


def test_plugins_come_from_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    def double(base: torch.Tensor, deltas: Any, args: MergeArgs, **_: Any) -> torch.Tensor:
        return base * 2

    plugin = MergeMethod(name="double", fn=double, params=(), base=registry.BasePolicy.REQUIRED)
    points = [
        SimpleNamespace(name="double", value="pkg:DOUBLE", load=lambda: plugin),
        SimpleNamespace(
            name="ties", value="pkg:TIES", load=lambda: plugin
        ),  # cannot shadow a built-in
        SimpleNamespace(name="broken", value="pkg:BROKEN", load=lambda: 1 / 0),
    ]
    monkeypatch.setattr(
        evomerge.registry,
        "entry_points",
        lambda group: points if group == registry.ENTRY_POINT_GROUP else [],
    )
    monkeypatch.setattr(registry.MERGE_METHODS, "_loaded", {})
    assert get_method("double") is plugin
    assert get_method("ties") is METHODS["ties"]  # a plugin cannot shadow a built-in
    assert list_methods()[-2:] == ["broken", "double"]  # listed without being loaded
    with pytest.raises(ConfigError, match=r"merge method 'broken' is a plug-in .*ZeroDivision"):
        get_method("broken")  # a broken plugin fails its own name only
    with pytest.raises(UnknownMethodError, match="double"):
        get_method("triple")


def test_the_registry_has_every_mergekit_method() -> None:
    """mergekit 0.1.5's registry is the list to match: each name, each parameter name and
    scope, each default."""
    from mergekit.merge_methods import registry as mk

    scopes = {"shared": Scope.GLOBAL, "input": Scope.INPUT, "non_base": Scope.NON_BASE}
    theirs = {m.spec.name: m.spec for m in mk.registered_methods()}
    assert set(theirs) <= set(METHODS)
    for name, spec in theirs.items():
        assert METHODS[name].mergekit, name
        ours = {p.name: p for p in METHODS[name].params}
        assert set(ours) == {p.name for p in spec.parameters}, name
        for p in spec.parameters:
            assert ours[p.name].scope == scopes[p.scope.value], (name, p.name)
            if not p.required:
                assert ours[p.name].default == p.default, (name, p.name)
            else:
                assert ours[p.name].required, (name, p.name)


@pytest.mark.parametrize("density", [0.1, 0.5, 0.9])
def test_dare_l1_table_equals_the_sum_over_kept_coordinates(
    density: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large tensors rescale DARE from a cumulative table (no pass per trial); it must give
    the L1 the direct sum gives, to the last bin (one bin off moves it by ~1/(n density))."""
    d = torch.randn((256, 256), generator=torch.Generator().manual_seed(5))
    assert d.numel() < _aux.NOISE_TABLE_MIN  # so the default builds no table here
    plain = build_aux(
        {Need.NOISE_L1}, torch.zeros_like(d), d, seed=1, tensor_name="w", source_key="a"
    )
    assert plain.noise_l1 is None
    monkeypatch.setattr(_aux, "NOISE_TABLE_MIN", d.numel())
    aux = build_aux(
        {Need.NOISE_L1}, torch.zeros_like(d), d, seed=1, tensor_name="w", source_key="a"
    )
    assert aux.noise_l1 is not None and aux.noise is not None
    assert torch.equal(aux.noise, plain.noise)
    keep = bernoulli_keep(density)
    expected = float(d.reshape(-1)[aux.noise < keep.threshold].abs().double().sum())
    ws = Workspace()
    assert kept_l1(d.reshape(-1), keep, aux, ws) == pytest.approx(expected, rel=1e-6)
    assert kept_l1(d.reshape(-1), keep, plain, ws) == pytest.approx(expected, rel=1e-6)
