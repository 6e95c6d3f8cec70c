"""Atomic writes: a file or a directory appears complete or not at all.

- :func:`atomic_write`: a file's new content is written to a hidden sibling, flushed to
  disk, and renamed over the file; readers see the old or the new content, never a part.
- :func:`atomic_directory`: a directory is built in a hidden sibling and renamed into place.

Temporary names are ``.<name>.tmp-<host>-<pid>-<random>`` (and ``.<name>.old-...`` for a
directory being replaced), so that a later write of the same target can tell the
leftovers of a process that was killed (SIGKILL cannot be caught) from those of one still
running: :func:`sweep_stale` removes the first (and puts back a replaced directory whose
replacement never arrived), never the second.

Files and directories get the modes the umask gives new ones (as ``open(path, "w")`` and
``mkdir`` would), not the private modes of temporary files: a serving process running as
another user can read them. :func:`publish` applies them to files written by libraries
that do not (safetensors writes 0600).

A write that fails because the disk is full, the file system is read-only or permission
is denied raises :class:`~evomerge.exceptions.WriteError` (also an ``OSError``) with one
line naming the path and what to do (:func:`write_error`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import shutil
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from evomerge.exceptions import ExportError, WriteError

logger = logging.getLogger(__name__)

__all__ = [
    "DISK_ERRNOS",
    "atomic_directory",
    "atomic_write",
    "check_out_dir",
    "dir_mode",
    "file_mode",
    "publish",
    "sweep_stale",
    "write_error",
]

#: The errors of a full disk, a read-only file system or a missing permission.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})

_umask_lock = threading.Lock()


def _current_umask() -> int:
    try:  # Linux shows it without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _umask_lock:  # elsewhere: read it by setting it back at once
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new file gets from the umask (0644 under the usual 022)."""
    return 0o666 & ~_current_umask()


def dir_mode() -> int:
    """The mode a new directory gets from the umask (0755 under the usual 022)."""
    return 0o777 & ~_current_umask()


def publish(path: str | Path) -> None:
    """Give a file written by a library with a private mode the umask's mode."""
    os.chmod(path, file_mode())


def write_error(err: OSError, path: str | Path | None = None, *, what: str = "") -> WriteError:
    """A one-line :class:`WriteError` for ``err`` raised while writing ``path``
    (default: ``err.filename``): what happened, where, and what to do."""
    where = str(path if path is not None else (err.filename or "the output"))
    writing = f" while writing {what}" if what else ""
    code = err.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        msg = (
            f"no space left on the device of {where}{writing}: free some space (or choose "
            "another directory), then rerun the same command"
        )
    elif code == errno.EROFS:
        msg = (
            f"{where} is on a read-only file system{writing}: choose a writable directory "
            "(or remount it read-write), then rerun the same command"
        )
    elif code in (errno.EACCES, errno.EPERM):
        msg = (
            f"permission denied{writing} to {where}: choose a directory you can write to (or "
            "fix its permissions), then rerun the same command"
        )
    else:
        msg = f"cannot write{writing or ' to'} {where}: {err.strerror or err}"
    out = WriteError(code if code is not None else 0, msg)
    out.filename = where
    return out


# -- temporary names, and the leftovers of killed writers --------------------------------

_HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def _temp_name(target: Path, kind: str) -> Path:
    return target.with_name(f".{target.name}.{kind}-{_HOST}-{os.getpid()}-{secrets.token_hex(4)}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def sweep_stale(target: str | Path) -> list[Path]:
    """Remove what killed writers of ``target`` left next to it: temporary files and folders
    of this naming whose process (on this host) is gone. A directory that was being
    replaced (``.old-``) is put back when ``target`` is missing, else removed. Leftovers of
    processes still running, or of other hosts, are kept. Returns the paths handled."""
    target = Path(target)
    pattern = re.compile(
        rf"^\.{re.escape(target.name)}\.(tmp|old)-{re.escape(_HOST)}-(\d+)-[0-9a-f]{{8}}$"
    )
    try:
        entries = list(target.parent.iterdir())
    except OSError:
        return []
    handled = []
    for entry in sorted(entries):
        m = pattern.match(entry.name)
        if m is None or _pid_alive(int(m.group(2))):
            continue
        kind = m.group(1)
        try:
            if kind == "old" and not target.exists():
                os.replace(entry, target)
                logger.warning("restored %s from %s (a replacement was interrupted)", target, entry)
            elif entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
                logger.info("removed %s, left by an interrupted run", entry)
            else:
                entry.unlink()
                logger.info("removed %s, left by an interrupted run", entry)
        except OSError as err:
            logger.warning("could not remove %s: %s", entry, err)
            continue
        handled.append(entry)
    return handled


# -- files ------------------------------------------------------------------------------


def atomic_write(
    path: str | Path, data: bytes | str, *, encoding: str = "utf-8", durable: bool = True
) -> Path:
    """Replace ``path``'s content with ``data`` atomically; returns ``path``.

    The content goes to a hidden sibling (see the module docstring), is fsynced, then
    renamed over ``path``, with the umask's mode. On any exception, KeyboardInterrupt
    included, the temporary file is removed and ``path`` is untouched. A full disk, a
    read-only file system or a missing permission raise :class:`WriteError`; other
    OSErrors propagate. ``durable=False`` skips the fsync: readers still see the
    old or the whole new content, but a power cut may lose the file (for caches that can
    recompute).
    """
    path = Path(path)
    blob = data.encode(encoding) if isinstance(data, str) else data
    sweep_stale(path)
    tmp = _temp_name(path, "tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
    except OSError as err:
        raise _disk(err, path) from err
    try:
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise _disk(err, path) from err
        raise
    return path


def _disk(err: OSError, path: Path) -> OSError:
    return write_error(err, path) if err.errno in DISK_ERRNOS else err


# -- directories --------------------------------------------------------------------------


def check_out_dir(out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Raise :class:`ExportError` unless ``out_dir`` can receive a new checkpoint.

    It may be absent or an empty directory; a non-empty directory is accepted only with
    ``overwrite=True``; a file is never accepted. Returns the absolute path.
    """
    out = Path(out_dir).expanduser().absolute()
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise ExportError(
                f"out_dir: {str(out)!r} exists and is not a directory; choose another path"
            )
        if any(out.iterdir()) and not overwrite:
            raise ExportError(
                f"out_dir: {str(out)!r} exists and is not empty; choose another directory, "
                "remove it, or replace it: --overwrite (evomerge export / merge), "
                "overwrite=True (Python)"
            )
    return out


def _make_temp_dir(out: Path) -> Path:
    while True:
        tmp = _temp_name(out, "tmp")
        try:
            tmp.mkdir(mode=0o700)
        except FileExistsError:  # pragma: no cover - 32 random bits
            continue
        return tmp


@contextmanager
def atomic_directory(out_dir: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``out_dir`` when the block ends without error.

    The temporary directory is a hidden sibling of ``out_dir`` (same file system, so the
    final step is a rename); the leftovers of killed writers of ``out_dir`` are removed
    first (:func:`sweep_stale`). On any exception, KeyboardInterrupt included, it is
    removed and ``out_dir`` is untouched. With ``overwrite=True`` an existing ``out_dir``
    is replaced only after the new one is complete. The directory gets the umask's mode.
    Raises :class:`ExportError` when ``out_dir`` is refused (see :func:`check_out_dir`),
    before and after the block, and :class:`WriteError` when the disk is full, read-only
    or not writable.
    """
    out = check_out_dir(out_dir, overwrite=overwrite)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(out)
        tmp = _make_temp_dir(out)
    except OSError as err:
        if err.errno in DISK_ERRNOS:
            raise write_error(err, out.parent) from err
        raise ExportError(
            f"out_dir: cannot create a directory next to {str(out)!r}: {err}"
        ) from err
    try:
        yield tmp
        os.chmod(tmp, dir_mode())  # private while being built; shared once complete
        _commit(tmp, out, overwrite=overwrite)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if (
            isinstance(err, OSError)
            and not isinstance(err, WriteError)
            and err.errno in DISK_ERRNOS
        ):
            raise write_error(err, out) from err
        raise


def _commit(tmp: Path, out: Path, *, overwrite: bool) -> None:
    check_out_dir(out, overwrite=overwrite)  # something may have appeared meanwhile
    old: Path | None = None
    if out.is_dir():
        if any(out.iterdir()):
            old = _temp_name(out, "old")
            os.replace(out, old)  # a killed process leaves it for sweep_stale to put back
        else:
            out.rmdir()
    try:
        os.replace(tmp, out)
    except OSError as err:
        if old is not None:
            os.replace(old, out)
        raise ExportError(
            f"out_dir: cannot move the finished checkpoint to {str(out)!r}: {err}"
        ) from err
    if old is not None:
        logger.info("replaced the previous contents of %s", out)
        with contextlib.suppress(OSError):
            shutil.rmtree(old)
