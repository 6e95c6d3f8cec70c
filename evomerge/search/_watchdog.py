"""A watchdog for the local Ray cluster a driver starts: no orphans after a SIGKILL.

When the driver is killed with SIGKILL (the OOM killer, ``kill -9``, a scheduler's hard
stop) it cannot shut Ray down. Ray's own fate sharing stops the raylet and the GCS, but
processes the raylet started (the dashboard and runtime-env agents, workers) linger as
orphans for about a minute. :func:`start_watchdog` runs a small process, in its own
session, that follows the driver's process tree (every process it starts, at any depth,
noted with its start time so a reused pid is never touched) and, when the driver dies,
terminates what is left, then exits. When the driver ends normally it stops the watchdog
(:meth:`Watchdog.stop`) after ``ray.shutdown()``, and nothing is killed.

Run as ``python path/to/_watchdog.py DRIVER_PID``: as a script, so that it starts in a
fraction of a second (``-m`` would import the whole ``evomerge.search`` package first,
torch and Ray included, and miss a driver killed meanwhile). It imports only the
standard library and psutil.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

__all__ = ["POLL_S", "Watchdog", "start_watchdog"]

logger = logging.getLogger(__name__)

#: How often the watchdog looks at the driver's process tree (seconds).
POLL_S = 0.5
_GRACE_S = 3.0


class Watchdog:
    """The driver's handle on its watchdog process."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc

    def stop(self) -> None:
        """Let the watchdog go without killing anything (the driver shut Ray down)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover - it exits at once
                self.proc.kill()


def start_watchdog(driver_pid: int | None = None) -> Watchdog | None:
    """Start the watchdog of ``driver_pid`` (default: this process). None when it cannot
    start (psutil missing): the cluster then works as before, without the clean-up."""
    try:
        import psutil  # noqa: F401 - the watchdog needs it
    except ImportError:  # pragma: no cover - psutil is a dependency
        logger.warning("psutil is not installed: no watchdog for the local Ray cluster")
        return None
    pid = driver_pid if driver_pid is not None else os.getpid()
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), str(pid)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,  # never hold the driver's pipes open
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # not stopped by signals sent to the driver's process group
    )
    return Watchdog(proc)


def _alive(proc: object) -> bool:
    import psutil

    try:
        return bool(proc.is_running()) and proc.status() != psutil.STATUS_ZOMBIE  # type: ignore[attr-defined]
    except psutil.Error:
        return False


def _watch(driver_pid: int) -> int:
    """Follow the driver's tree until it dies; then end what is left. Returns the number
    of processes ended."""
    import psutil

    me = os.getpid()
    try:
        driver = psutil.Process(driver_pid)
    except psutil.Error:
        return 0
    known: dict[int, psutil.Process] = {}
    while _alive(driver):
        try:
            for child in driver.children(recursive=True):
                if child.pid != me and child.pid not in known:
                    known[child.pid] = child  # psutil.Process keeps the start time
        except psutil.Error:
            pass
        time.sleep(POLL_S)
    left = [p for p in known.values() if _alive(p)]  # is_running() checks the start time
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(left, timeout=_GRACE_S)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    return len(left)


def _stop(signum: int, frame: FrameType | None) -> None:
    sys.exit(0)  # the driver shut Ray down itself: leave without killing anything


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python _watchdog.py DRIVER_PID", file=sys.stderr)
        return 2
    _watch(int(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
