"""Ctrl-C and SIGTERM, handled the same way in every command (the one place for signals).

Schedulers (Slurm, Kubernetes, systemd) stop jobs with SIGTERM; a user presses Ctrl-C.
Inside :func:`interruptible` both raise :class:`Interrupted` (a ``KeyboardInterrupt``) in
the main thread, so every ``except BaseException`` / ``finally`` clean-up runs: atomic
writers remove their temporary files, the search driver puts its trials in flight back
for the resume. A command then exits with :func:`exit_code` (130 for SIGINT, 143 for
SIGTERM) after printing :data:`MESSAGE`.

Libraries may replace the SIGTERM handler (``ray.init`` installs one that calls
``sys.exit(15)``); call :func:`reclaim` right after them. A second signal while the first
is being handled is ignored (with a note on stderr) so that clean-up is not cut short; a
third one exits at once. SIGKILL cannot be caught: the next run cleans up after it.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "MESSAGE",
    "SIGNALS",
    "Interrupted",
    "as_interrupt",
    "exit_code",
    "interruptible",
    "received",
    "reclaim",
]

#: The line an interrupted command prints before it exits.
MESSAGE = "interrupted; rerun the same command to resume"

#: The signals that interrupt a command.
SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread by SIGINT or SIGTERM inside :func:`interruptible`."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


class _State:
    depth = 0  # nesting of interruptible() blocks
    saved: dict[int, Any] = {}  # noqa: RUF012 - the handlers found by the outermost block
    received: int | None = None  # the first signal of this block
    count = 0  # signals received in this block


def _handler(signum: int, frame: FrameType | None) -> None:
    _State.count += 1
    if _State.received is None:
        _State.received = signum
        raise Interrupted(signum)
    if _State.count >= 3:
        os.write(2, b"\nforced exit\n")
        os._exit(exit_code(signum))
    os.write(2, b"\nstill stopping cleanly; send the signal once more to force an exit\n")


@contextmanager
def interruptible() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` in the main thread within the block.

    Nested blocks share the outermost one's state; the previous handlers are restored when
    the outermost block ends. Off the main thread this does nothing (Python only delivers
    signals there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _State.depth == 0:
        _State.saved = {s: signal.getsignal(s) for s in SIGNALS}
        _State.received, _State.count = None, 0
        _install()
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
        if _State.depth == 0:
            for s, old in _State.saved.items():
                signal.signal(s, old if old is not None else signal.SIG_DFL)


def _install() -> None:
    for s in SIGNALS:
        signal.signal(s, _handler)


def reclaim() -> None:
    """Put our handlers back inside an :func:`interruptible` block after a library replaced
    them (``ray.init`` does). Outside such a block, or off the main thread, does nothing."""
    if _State.depth > 0 and threading.current_thread() is threading.main_thread():
        _install()


def as_interrupt(err: SystemExit) -> BaseException:
    """What to raise for a ``SystemExit`` that a library's own SIGTERM handler raised
    before :func:`reclaim` could run (``ray.init``'s calls ``sys.exit(15)``): an
    :class:`Interrupted` for SIGTERM inside an :func:`interruptible` block, else ``err``."""
    if _State.depth > 0 and err.code == signal.SIGTERM:
        if _State.received is None:
            _State.received = signal.SIGTERM
        _State.count += 1
        return Interrupted(signal.SIGTERM)
    return err


def received() -> int | None:
    """The signal that interrupted the current (or last) :func:`interruptible` block."""
    return _State.received


def exit_code(signum: int | None) -> int:
    """The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM);
    130 when the signal is unknown (a plain KeyboardInterrupt)."""
    return 128 + (signum if signum is not None else signal.SIGINT)
