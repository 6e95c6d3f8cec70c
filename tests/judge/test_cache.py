"""The judge reply cache shared by several processes (Ray workers on one node) at once."""

from __future__ import annotations

import logging
import multiprocessing as mp
import sqlite3
from pathlib import Path

import pytest

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


def test_key_is_canonical_and_puts_replace(tmp_path: Path) -> None:
    msgs = [{"role": "user", "content": "q"}]
    key = request_key(endpoint="http://h/v1/", model="m", messages=msgs, params={"n": 1, "t": 0.5})
    assert key == request_key(
        endpoint="http://h/v1", model="m", messages=msgs, params={"t": 0.5, "n": 1}
    )  # a trailing slash and the order of parameters do not matter
    assert key != request_key(endpoint="http://h/v1", model="m", messages=msgs, params={"n": 2})
    assert key != request_key(
        endpoint="http://h/v1", model="m", messages=[{"role": "user", "content": "Q"}], params={}
    )
    cache = JudgeCache(tmp_path / "c.sqlite")
    assert cache.get(key) is None and (cache.hits, cache.misses) == (0, 1)
    cache.put(key, {"v": 1})
    cache.put(key, {"v": 2})  # a later put replaces the reply
    assert cache.get(key) == {"v": 2} and len(cache) == 1 and (cache.hits, cache.misses) == (1, 1)
    assert "hits=1, misses=1" in repr(cache)
    cache.close()
    cache.close()  # idempotent
    with sqlite3.connect(tmp_path / "c.sqlite") as conn:  # readers never block the writer
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_keys_are_stable_across_versions() -> None:
    """A resumed run (maybe after an upgrade) finds its cached replies: the key of a request
    is fixed, non-ASCII text included. Change it only on purpose (old caches then miss)."""
    key = request_key(
        endpoint="http://127.0.0.1:8000/v1/",
        model="judge-m",
        messages=[{"role": "user", "content": "ですわ?"}],
        params={"temperature": 0.0, "n": 1},
    )
    assert key == "eee68be00dd3024b468f53fd3c697139e5fe5366143e37702080589ba6e2d4be"


def test_the_cache_creates_missing_folders(tmp_path: Path) -> None:
    cache = JudgeCache(tmp_path / "runs" / "a" / "judge_cache.sqlite")
    cache.put("k", {"v": 1})
    assert cache.get("k") == {"v": 1}
    cache.close()
    again = JudgeCache(tmp_path / "runs" / "a" / "judge_cache.sqlite")  # the folder exists now
    assert len(again) == 1
    again.close()


def test_a_full_cache_logs_once_and_stops_storing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite's own "database or disk is full" (the file capped at its current size): the
    reply in hand is still good, so put() does not raise; it warns once and stores no more."""
    cache = JudgeCache(tmp_path / "c.sqlite")
    cache.put("small", {"v": 1})
    pages = cache._conn.execute("PRAGMA page_count").fetchone()[0]
    cache._conn.execute(f"PRAGMA max_page_count = {pages}")
    with caplog.at_level(logging.WARNING, logger="evomerge.judge._cache"):
        cache.put("big", {"v": "x" * 100_000})
        cache.put("next", {"v": 2})  # not tried again
    assert cache.write_error is not None and "full" in cache.write_error
    assert [r.getMessage() for r in caplog.records if "cannot be written" in r.getMessage()] == [
        f"judge cache {cache.path} cannot be written ({cache.write_error}); "
        "replies are no longer cached"
    ]
    assert cache.get("small") == {"v": 1} and cache.get("big") is None and len(cache) == 1
    cache.close()
