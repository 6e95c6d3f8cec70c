"""The judge reply cache shared by several processes (Ray workers on one node) at once."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from evomerge.judge import JudgeCache
from evomerge.judge._cache import request_key

N_KEYS = 150


def _key(i: int) -> str:
    messages = [{"role": "user", "content": f"answer {i}"}]
    return request_key(endpoint="http://127.0.0.1:1/v1", model="m", messages=messages, params={})


def _writer(path: str, worker: int, start: mp.synchronize.Event, out: mp.Queue) -> None:
    """Open the cache as a worker process would, then write and read back as fast as it can:
    its own keys, and keys every worker writes (the same request judged twice)."""
    try:
        start.wait(30)
        cache = JudgeCache(path)  # both processes create the file and table at once
        for i in range(N_KEYS):
            cache.put(_key(1000 * (worker + 1) + i), {"worker": worker, "i": i})
            cache.put(_key(i), {"shared": i})
            got = cache.get(_key(i))
            assert got == {"shared": i}, got
        cache.close()
        out.put(("ok", worker))
    except BaseException as err:  # report to the parent, which asserts
        out.put(("error", f"worker {worker}: {type(err).__name__}: {err}"))


def test_two_processes_write_the_same_cache_file_at_once(tmp_path: Path) -> None:
    path = tmp_path / "run" / "judge_cache.sqlite"
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(path), w, start, out)) for w in range(2)]
    for p in procs:
        p.start()
    start.set()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert sorted(results) == [("ok", 0), ("ok", 1)], results
    cache = JudgeCache(path)
    assert len(cache) == 3 * N_KEYS  # each worker's own keys, plus the shared ones once
    for w in range(2):
        for i in (0, N_KEYS // 2, N_KEYS - 1):
            assert cache.get(_key(1000 * (w + 1) + i)) == {"worker": w, "i": i}
    assert all(cache.get(_key(i)) == {"shared": i} for i in range(N_KEYS))
    cache.close()
