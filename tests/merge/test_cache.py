"""PrecomputeCache: the engine's precomputations on disk, keyed by content, across processes."""

from __future__ import annotations

import multiprocessing
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load, save

from evomerge.merge import MergeEngine, MergeRecipe, iter_merged_tensors
from evomerge.pool import ModelPool

METHODS = ["ties", "breadcrumbs_ties", "dare_ties", "della"]


def _recipe(pool: ModelPool, method: str) -> MergeRecipe:
    extra = {"epsilon": 0.1} if method == "della" else {}
    return MergeRecipe.from_mergekit_dict(
        {
            "merge_method": method,
            "base_model": str(pool.base_path),
            "models": [
                {"model": str(p), "parameters": {"weight": 0.6, "density": 0.4, **extra}}
                for p in pool.source_paths
            ],
        }
    )


def _merges(engine: MergeEngine) -> dict[str, dict[str, torch.Tensor]]:
    return {
        m: {k: v.clone() for k, v in engine.materialize(_recipe(engine.pool, m)).items()}
        for m in METHODS
    }


def _same(a: dict[str, dict[str, torch.Tensor]], b: dict[str, dict[str, torch.Tensor]]) -> None:
    for method, tensors in a.items():
        for name, t in tensors.items():
            assert torch.equal(t, b[method][name]), (method, name)


@pytest.fixture
def models(tiny_models: Any, tmp_path: Path) -> dict[str, Path]:
    """Private copies (a test overwrites one)."""
    out = {}
    for key in ("base", "ft_a", "ft_c"):
        out[key] = tmp_path / "models" / key
        shutil.copytree(tiny_models[key], out[key])
    return out


def _pool(models: dict[str, Path]) -> ModelPool:
    return ModelPool.open(models["base"], [models["ft_a"], models["ft_c"]])


def test_a_second_engine_reads_what_the_first_computed(
    models: dict[str, Path], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    plain = _merges(MergeEngine(_pool(models), methods=METHODS, seed=3))
    first = MergeEngine(_pool(models), methods=METHODS, seed=3, cache_dir=cache)
    assert first.cache is not None and first.cache.hits == 0 and first.cache.misses > 0
    second = MergeEngine(_pool(models), methods=METHODS, seed=3, cache_dir=cache)
    assert second.cache is not None
    assert (second.cache.hits, second.cache.misses) == (first.cache.misses, 0)
    _same(_merges(first), plain)
    _same(_merges(second), plain)
    other_seed = MergeEngine(_pool(models), methods=METHODS, seed=4, cache_dir=cache)
    assert other_seed.cache is not None and other_seed.cache.misses > 0  # noise is per seed


def test_changed_models_are_never_read_from_a_stale_entry(
    models: dict[str, Path], tiny_models: Any, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    MergeEngine(_pool(models), methods=["ties"], cache_dir=cache)
    shutil.rmtree(models["ft_a"])
    shutil.copytree(tiny_models.ft_b, models["ft_a"])  # same path, other weights
    again = MergeEngine(_pool(models), methods=["ties"], cache_dir=cache)
    assert again.cache is not None and again.cache.misses > 0
    plain = MergeEngine(_pool(models), methods=["ties"])
    recipe = _recipe(plain.pool, "ties")
    for name, t in plain.materialize(recipe).items():
        assert torch.equal(again.materialize(recipe)[name], t), name


def test_a_damaged_entry_is_recomputed(
    models: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    MergeEngine(_pool(models), methods=["ties"], cache_dir=cache)
    victim = sorted(cache.rglob("*.safetensors"))[0]
    victim.write_bytes(b"not a safetensors file")
    with caplog.at_level("WARNING"):
        again = MergeEngine(_pool(models), methods=["ties"], cache_dir=cache)
    assert again.cache is not None and again.cache.misses == 1
    assert "unreadable cache entry" in caplog.text
    plain = MergeEngine(_pool(models), methods=["ties"])
    recipe = _recipe(plain.pool, "ties")
    for name, t in plain.materialize(recipe).items():
        assert torch.equal(again.materialize(recipe)[name], t), name


def _build_in_process(models: dict[str, str], cache: str, barrier: Any, queue: Any) -> None:
    torch.set_num_threads(1)
    pool = ModelPool.open(models["base"], [models["ft_a"], models["ft_c"]])
    barrier.wait()  # start together
    engine = MergeEngine(pool, methods=METHODS, seed=3, cache_dir=cache)
    assert engine.cache is not None
    out = engine.materialize(_recipe(pool, "ties"))
    # as bytes: tensors sent through a queue would live in this process's shared memory
    queue.put(
        (engine.cache.hits, engine.cache.misses, save({k: v.clone() for k, v in out.items()}))
    )


def test_processes_starting_together_compute_each_entry_once(
    models: dict[str, Path], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    paths = {k: str(v) for k, v in models.items()}
    procs = [
        ctx.Process(target=_build_in_process, args=(paths, str(cache), barrier, queue))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    entries = len(list(cache.rglob("*.safetensors")))
    assert sum(r[1] for r in results) == entries  # each entry computed by one process
    assert sum(r[0] for r in results) == entries  # and read by the other
    first, second = load(results[0][2]), load(results[1][2])
    for name, t in first.items():
        assert torch.equal(second[name], t), name


def test_sources_are_precomputed_on_threads_with_the_same_result(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With 2 torch threads each source's sort and noise run on a thread of their own (the
    set-up and a one-off merge take the time of one source), through the cache's locks,
    and give the same precomputations and merges as one thread; its counters stay exact."""
    import threading

    from evomerge.merge.methods import _aux, _sparsify

    seen: set[int] = set()
    sort = _aux._mergekit_sort

    def watched(delta: torch.Tensor, *, descending: bool) -> torch.Tensor:
        seen.add(threading.get_ident())
        return sort(delta, descending=descending)

    monkeypatch.setattr(_aux, "_mergekit_sort", watched)
    pool = _pool(models)
    ties = _recipe(pool, "ties")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = MergeEngine(pool, methods=METHODS, seed=3)
        one_off_1 = dict(iter_merged_tensors(ties, pool, seed=3))
        assert seen == {threading.get_ident()}  # one thread: a plain loop
        seen.clear()
        torch.set_num_threads(2)
        two = MergeEngine(_pool(models), methods=METHODS, seed=3, cache_dir=tmp_path / "c")
        assert threading.get_ident() not in seen and len(seen) >= 2  # sources on worker threads
        seen.clear()
        two.materialize(ties)
        assert not seen  # a trial sorts nothing
        monkeypatch.setattr(_sparsify, "_quantized", lambda _: True)  # cut by mergekit's sort
        one_off_2 = dict(iter_merged_tensors(ties, pool, seed=3))
        assert seen and threading.get_ident() not in seen
    finally:
        torch.set_num_threads(threads)
    assert two.cache is not None and (two.cache.hits, two.cache.misses) == (0, two.cache.misses)
    assert two.cache.misses == sum(1 for _ in (two.cache.root).rglob("*.safetensors"))
    _same(_merges(two), _merges(one))
    for name, t in one_off_1.items():  # same kept coordinates, same arithmetic: same bits
        assert torch.equal(t, one_off_2[name]), name
