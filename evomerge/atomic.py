"""Atomic writes: a file or a directory appears complete or not at all.

- :func:`atomic_write`: a file's new content is written to a hidden sibling, flushed to
  disk, and renamed over the file; readers see the old or the new content, never a part.
- :func:`atomic_directory`: a directory is built in a hidden sibling and renamed into place.

Files get the mode the umask gives a new file (as ``open(path, "w")`` would), not the
private mode of a temporary file.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from evomerge.exceptions import ExportError

logger = logging.getLogger(__name__)

__all__ = ["atomic_directory", "atomic_write", "check_out_dir"]


def atomic_write(path: str | Path, data: bytes | str, *, encoding: str = "utf-8") -> Path:
    """Replace ``path``'s content with ``data`` atomically; returns ``path``.

    The content goes to ``.<name>.tmp-<random>`` in the same folder, is fsynced, then
    renamed over ``path``. On any exception, KeyboardInterrupt included, the temporary
    file is removed and ``path`` is untouched. OSError propagates (the caller names what
    it was writing).
    """
    path = Path(path)
    blob = data.encode(encoding) if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
    try:
        try:
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


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


@contextmanager
def atomic_directory(out_dir: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``out_dir`` when the block ends without error.

    The temporary directory is ``.<name>.tmp-<random>`` next to ``out_dir`` (same file
    system, so the final step is a rename). On any exception, KeyboardInterrupt included,
    it is removed and ``out_dir`` is untouched. With ``overwrite=True`` an existing
    ``out_dir`` is replaced only after the new one is complete. Raises :class:`ExportError`
    when ``out_dir`` is refused (see :func:`check_out_dir`), before and after the block.
    """
    out = check_out_dir(out_dir, overwrite=overwrite)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as err:
        raise ExportError(
            f"out_dir: cannot create a directory next to {str(out)!r}: {err}"
        ) from err
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; a checkpoint is meant to be shared
    try:
        yield tmp
        _commit(tmp, out, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _commit(tmp: Path, out: Path, *, overwrite: bool) -> None:
    check_out_dir(out, overwrite=overwrite)  # something may have appeared meanwhile
    old: Path | None = None
    if out.is_dir():
        if any(out.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old)  # old was created empty only to reserve a unique name
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
        shutil.rmtree(old, ignore_errors=True)
