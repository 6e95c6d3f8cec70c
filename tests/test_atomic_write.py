"""evomerge.atomic.atomic_write: the file holds the old or the new content, never a part."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from evomerge import atomic
from evomerge.exceptions import WriteError


def test_replaces_content_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    atomic.atomic_write(path, "old\n")
    atomic.atomic_write(path, "ねこ\n")  # str is written as UTF-8
    assert path.read_bytes() == "ねこ\n".encode()
    atomic.atomic_write(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.yaml"]


def test_a_failed_write_keeps_the_old_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "report.html"
    atomic.atomic_write(path, "complete old report")

    def disk_full(fd: int, data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "write", disk_full)
    with pytest.raises(OSError, match="no space left on the device of .*report.html") as info:
        atomic.atomic_write(path, "new report that does not fit")
    assert isinstance(info.value, WriteError) and info.value.errno == 28
    monkeypatch.undo()
    assert path.read_text() == "complete old report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_mode_follows_the_umask_not_the_temporary_file(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = atomic.atomic_write(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    assert (
        stat.S_IMODE(path.stat().st_mode) == 0o644
    )  # readable by a server running as another user
