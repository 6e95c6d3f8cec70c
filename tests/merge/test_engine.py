"""MergeEngine: equals the streaming merge, reuses its buffers, bounds its memory."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from evomerge.exceptions import MemoryBudgetError, MergeError
from evomerge.merge import MergeEngine, MergeRecipe, iter_merged_tensors, pool_for_recipe
from evomerge.pool import ModelPool

RANDOM = ("dare_ties", "dare_linear", "della", "della_linear")


@pytest.fixture(scope="module")
def pool(tiny_models: Any) -> ModelPool:
    return ModelPool.open(tiny_models.base, [tiny_models.ft_a, tiny_models.ft_b, tiny_models.ft_c])


@pytest.fixture(scope="module")
def engine(pool: ModelPool) -> MergeEngine:
    return MergeEngine(pool, seed=123, methods=["ties", "task_arithmetic", *RANDOM])


def _recipe(
    pool: ModelPool, method: str, sources: tuple[int, ...] = (0, 1, 2), **params: Any
) -> MergeRecipe:
    models = [
        {
            "model": str(pool.source_paths[i]),
            "parameters": {"weight": 0.3 + 0.2 * k, "density": [0.3, 0.8]},
        }
        for k, i in enumerate(sources)
    ]
    return MergeRecipe.from_mergekit_dict(
        {
            "merge_method": method,
            "base_model": str(pool.base_path),
            "models": models,
            "parameters": params,
        }
    )


def _stream(recipe: MergeRecipe, seed: int) -> dict[str, torch.Tensor]:
    return dict(iter_merged_tensors(recipe, pool_for_recipe(recipe), seed=seed))


@pytest.mark.parametrize("method", [*RANDOM, "ties"])
def test_engine_equals_streaming_bit_for_bit(
    pool: ModelPool, engine: MergeEngine, method: str
) -> None:
    recipe = _recipe(pool, method)
    merged = engine.materialize(recipe)
    streamed = _stream(recipe, seed=123)
    assert set(streamed) == set(merged)
    for name, t in streamed.items():
        assert torch.equal(merged[name], t), name
    other_seed = _stream(recipe, seed=124)
    if method in RANDOM:
        assert any(not torch.equal(other_seed[n], t) for n, t in streamed.items())


def test_engine_handles_reordered_and_partial_sources(pool: ModelPool, engine: MergeEngine) -> None:
    for sources in [(2, 0), (1,), (2, 1, 0)]:
        recipe = _recipe(pool, "dare_ties", sources)
        merged = engine.materialize(recipe)
        for name, t in _stream(recipe, seed=123).items():
            assert torch.equal(merged[name], t), (sources, name)
        ta = _recipe(pool, "task_arithmetic", sources)
        merged = engine.materialize(ta)
        for name, t in _stream(ta, seed=123).items():
            assert torch.allclose(merged[name], t, rtol=0, atol=1e-6), (sources, name)


def test_buffers_are_reused_and_results_repeat(pool: ModelPool, engine: MergeEngine) -> None:
    a, b = _recipe(pool, "dare_ties"), _recipe(pool, "ties")
    first = engine.materialize(a)
    snapshot = {n: t.clone() for n, t in first.items()}
    second = engine.materialize(b)
    assert second is first  # the same preallocated tensors, overwritten
    assert any(not torch.equal(second[n], snapshot[n]) for n in snapshot)
    third = engine.materialize(a)
    for name, t in snapshot.items():
        assert torch.equal(third[name], t), name


def test_materialize_into_given_tensors_of_another_dtype(
    pool: ModelPool, engine: MergeEngine
) -> None:
    recipe = _recipe(pool, "ties")
    expected = {n: t.clone() for n, t in engine.materialize(recipe).items()}
    out = {n: torch.zeros(t.shape, dtype=torch.bfloat16) for n, t in expected.items()}
    assert engine.materialize(recipe, out) is out
    for name, t in expected.items():
        assert torch.equal(out[name], t.to(torch.bfloat16)), name
    with pytest.raises(MergeError, match="out lacks 1 tensor"):
        engine.materialize(recipe, {n: t for n, t in out.items() if n != "model.norm.weight"})


def test_no_disk_reads_after_construction(
    pool: ModelPool, tiny_models: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = MergeEngine(
        ModelPool.open(tiny_models.base, [tiny_models.ft_a, tiny_models.ft_b]), methods=["ties"]
    )

    def no_io(*_: Any, **__: Any) -> None:
        raise AssertionError("read from disk during a merge")

    for attr in ("base_tensor", "source_tensor", "task_vector"):
        monkeypatch.setattr(engine.pool, attr, no_io)
    merged = engine.materialize(_recipe(engine.pool, "ties", (0, 1)))
    assert len(merged) == len(pool.tensor_names)


def test_declared_methods_limit_the_engine(pool: ModelPool) -> None:
    ties_only = MergeEngine(pool, methods=["ties"])
    with pytest.raises(MergeError, match=r"built for methods \['ties'\]; recipe uses 'dare_ties'"):
        ties_only.materialize(_recipe(pool, "dare_ties"))
    lazy = MergeEngine(pool, methods=None, seed=123)
    before = lazy.nbytes()
    merged = lazy.materialize(_recipe(pool, "dare_ties"))
    assert lazy.nbytes() > before  # noise computed on first use
    for name, t in _stream(_recipe(pool, "dare_ties"), seed=123).items():
        assert torch.equal(merged[name], t)


def test_memory_estimate_and_budget(pool: ModelPool) -> None:
    numel = sum(i.numel for i in pool.infos())
    scratch = (3 + 8) * (1 << 16) * 8
    assert MergeEngine.estimate_bytes(pool, torch.float32, [], 3) == numel * 4 * 5 + scratch
    assert MergeEngine.estimate_bytes(pool, torch.bfloat16, [], 3) == numel * 2 * 5 + scratch
    assert (
        MergeEngine.estimate_bytes(pool, torch.float32, ["ties"], 3)
        == numel * (4 * 5 + 4 * 3) + scratch
    )
    assert (
        MergeEngine.estimate_bytes(pool, torch.float32, ["dare_ties"], 3)
        == numel * (4 * 5 + 4 * 3) + scratch
    )
    engine = MergeEngine(pool, methods=["ties", "dare_ties", "della"])
    assert engine.nbytes() <= MergeEngine.estimate_bytes(
        pool, torch.float32, ["ties", "dare_ties", "della"], 3
    )
    need = MergeEngine.estimate_bytes(pool, torch.float32, ["ties"], 3)
    with pytest.raises(MemoryBudgetError) as err:
        MergeEngine(pool, methods=["ties"], max_bytes=need - 1)
    msg = str(err.value)
    assert (
        "budget" in msg
        and "smaller dtype" in msg
        and "fewer sources" in msg
        and "another device" in msg
    )
    MergeEngine(pool, methods=["ties"], max_bytes=need)  # exactly enough


def test_constructor_rejects_bad_arguments(pool: ModelPool) -> None:
    with pytest.raises(MergeError, match="dtype must be a floating-point"):
        MergeEngine(pool, dtype=torch.int8)
    with pytest.raises(MergeError, match=r"use \['ties'\]"):
        MergeEngine(pool, methods="ties")  # type: ignore[arg-type]
