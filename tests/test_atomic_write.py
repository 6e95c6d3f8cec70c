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
    with pytest.raises(OSError, match=r"no space left on the device of .*report\.html") as info:
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


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_later_write_removes_what_killed_writers_left_and_nothing_else(tmp_path: Path) -> None:
    dead, host = _dead_pid(), atomic._HOST
    stale_dir = tmp_path / f".out.tmp-{host}-{dead}-0badc0de"
    stale_dir.mkdir()
    (stale_dir / ".model-part-00001.safetensors").write_bytes(b"half a shard")
    kept = [
        tmp_path / f".out.tmp-{host}-{os.getpid()}-0000beef",  # a live writer (this process)
        tmp_path / f".out.tmp-otherhost-{dead}-0000beef",  # another machine's, on NFS
        tmp_path / ".out.tmp-x1y2z3w4",  # not our naming
        tmp_path / f".other.tmp-{host}-{dead}-0000beef",  # another target's
    ]
    for path in kept:
        path.mkdir()
    stale_file = tmp_path / f".run.yaml.tmp-{host}-{dead}-12345678"
    stale_file.write_text("half")

    with atomic.atomic_directory(tmp_path / "out") as tmp:
        (tmp / "a.txt").write_text("new")
    atomic.atomic_write(tmp_path / "run.yaml", "whole")

    assert not stale_dir.exists() and not stale_file.exists()
    assert all(path.is_dir() for path in kept)
    assert (tmp_path / "out" / "a.txt").read_text() == "new"
    assert (tmp_path / "run.yaml").read_text() == "whole"


def test_a_replacement_cut_short_puts_the_old_directory_back(tmp_path: Path) -> None:
    """Killed between moving the old directory aside and moving the new one in: the next
    write of that target restores the old one before anything else."""
    old = tmp_path / f".out.old-{atomic._HOST}-{_dead_pid()}-0badc0de"
    old.mkdir()
    (old / "precious.txt").write_text("old checkpoint")
    assert atomic.sweep_stale(tmp_path / "out") == [old]
    assert (tmp_path / "out" / "precious.txt").read_text() == "old checkpoint"
    assert not old.exists()


def test_directories_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        with atomic.atomic_directory(tmp_path / "out") as tmp:
            (tmp / "f").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o750
    assert stat.S_IMODE((tmp_path / "out" / "f").stat().st_mode) == 0o640
