"""A persistent cache of judge replies, so an identical request is never paid for twice.

One SQLite file (by default ``RUN_DIR/judge_cache.sqlite``) maps a request key to the
normalized reply. The key is the SHA-256 of the endpoint, model, messages and sampling
parameters (n, temperature, max_tokens, logprobs settings); the API key is never part of
it and never stored (replies come redacted from the client, and any ``Bearer`` token left
is redacted again here). Only successful replies are cached.

Thread safety: one connection guarded by a lock; safe for several threads of one process.
Several processes may share the file (SQLite locks it; WAL journal), e.g. Ray workers on
one node.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evomerge.judge._client import redact

logger = logging.getLogger(__name__)

__all__ = ["JudgeCache", "request_key"]


def request_key(
    *, endpoint: str, model: str, messages: list[dict[str, str]], params: Mapping[str, Any]
) -> str:
    """The cache key of one chat request (hex SHA-256 of its canonical JSON)."""
    payload = {
        "endpoint": endpoint.rstrip("/"),
        "model": model,
        "messages": messages,
        "params": dict(params),
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class JudgeCache:
    """SQLite-backed reply cache. Use ``get``/``put`` with keys from :func:`request_key`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            self.path, timeout=30.0, check_same_thread=False, isolation_level=None
        )
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, reply TEXT NOT NULL, created REAL NOT NULL)"
            )
        self.hits = 0
        self.misses = 0
        self.write_error: str | None = None  # set once a put failed: no more puts

    def get(self, key: str) -> dict[str, Any] | None:
        """The cached reply for ``key``, or None."""
        with self._lock:
            row = self._conn.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
            if row is None:
                self.misses += 1
                return None
            self.hits += 1
        reply: dict[str, Any] = json.loads(row[0])
        return reply

    def put(self, key: str, reply: Mapping[str, Any]) -> None:
        """Store ``reply`` (JSON-serializable) under ``key``; a later put replaces it.

        A cache that cannot be written (disk full, read-only) logs one warning and stops
        storing: the reply in hand is still good, so the trial goes on."""
        if self.write_error is not None:
            return
        blob = redact(json.dumps(reply, ensure_ascii=False))
        with self._lock:
            try:
                self._conn.execute(
                    "INSERT OR REPLACE INTO replies (key, reply, created) VALUES (?, ?, ?)",
                    (key, blob, time.time()),
                )
            except sqlite3.Error as err:  # "database or disk is full", "readonly database"
                self.write_error = str(err)
                logger.warning(
                    "judge cache %s cannot be written (%s); replies are no longer cached",
                    self.path,
                    err,
                )

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            self._conn.close()

    def __repr__(self) -> str:
        return f"JudgeCache({str(self.path)!r}, hits={self.hits}, misses={self.misses})"
