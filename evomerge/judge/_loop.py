"""A private asyncio event loop on a daemon thread, so sync code can drive async clients.

``LoopThread.run(coro)`` works from plain threads and from inside a running event loop
(it never touches the caller's loop). The async client lives on this loop for its whole
life, so its connection pool is reused across calls.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["LoopThread"]

T = TypeVar("T")


class LoopThread:
    """Starts its thread lazily on first use; ``close()`` stops it. Thread-safe."""

    def __init__(self, *, name: str = "evomerge-judge-loop") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _ensure(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=self._name, daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> asyncio.Future[T]:
        """Schedule ``coro`` on the private loop; returns an asyncio future for the caller's loop."""
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._ensure()))

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the private loop and block until it finishes."""
        if self._thread is not None and threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(
                "LoopThread.run() called from its own loop; await the coroutine instead"
            )
        return asyncio.run_coroutine_threadsafe(coro, self._ensure()).result()

    @property
    def started(self) -> bool:
        return self._loop is not None

    def close(self) -> None:
        """Stop the loop and join the thread (idempotent)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5.0)
        if not thread.is_alive():
            loop.close()
