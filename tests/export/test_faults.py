"""Writing a checkpoint under faults: SIGTERM and SIGKILL sent to a real `evomerge merge`
process mid-write, a full disk and a read-only file system (small tmpfs mounts), and the
modes of the files written (the umask decides, weights included)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from evomerge.cli import app
from evomerge.export import write_checkpoint
from evomerge.interrupt import MESSAGE
from evomerge.testing.tiny import build_tiny_model, perturb_model

runner = CliRunner()


@pytest.fixture(scope="module")
def big_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A ~110 MB base and a fine-tune: writing their merge takes long enough to be caught
    (and stopped) in the middle."""
    root = tmp_path_factory.mktemp("big_models")
    base = build_tiny_model(
        root / "base",
        seed=0,
        num_layers=8,
        hidden_size=512,
        intermediate_size=1536,
        num_attention_heads=8,
        num_key_value_heads=8,
    )
    return {"base": base, "ft": perturb_model(base, root / "ft", seed=1)}


def _config(path: Path, models: dict[str, Path]) -> Path:
    recipe = {
        "merge_method": "linear",
        "models": [
            {"model": str(models["base"]), "parameters": {"weight": 0.5}},
            {"model": str(models["ft"]), "parameters": {"weight": 0.5}},
        ],
        "dtype": "float32",
    }
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def _merge(cfg: Path, out: Path, log: Path) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "evomerge.cli", "merge", str(cfg), str(out), "--quiet"]
    with open(log, "wb") as f:
        return subprocess.Popen([*args, "--shard-size", "8MB"], stdout=f, stderr=subprocess.STDOUT)


def _leftovers(parent: Path, name: str) -> list[Path]:
    return [p for p in parent.iterdir() if p.name.startswith(f".{name}.tmp-")]


def _stop_mid_write(proc: subprocess.Popen[bytes], parent: Path, name: str) -> Path:
    """SIGSTOP ``proc`` once its temporary folder holds a shard; returns that folder."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the merge ended before it could be caught mid-write"
        tmp = _leftovers(parent, name)
        if tmp and any(tmp[0].iterdir()):
            proc.send_signal(signal.SIGSTOP)
            return tmp[0]
        time.sleep(0.002)
    raise AssertionError("the merge never started writing")


@pytest.fixture
def stopped_merge(big_models: dict[str, Path], tmp_path: Path) -> Iterator[dict[str, object]]:
    parent = tmp_path / "outs"
    parent.mkdir()
    cfg = _config(tmp_path / "merge.yaml", big_models)
    proc = _merge(cfg, parent / "out", tmp_path / "merge.log")
    try:
        tmp = _stop_mid_write(proc, parent, "out")
        yield {
            "proc": proc,
            "tmp": tmp,
            "parent": parent,
            "cfg": cfg,
            "log": tmp_path / "merge.log",
        }
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
            proc.wait()


def test_sigterm_mid_write_exits_143_and_leaves_nothing(stopped_merge: dict[str, object]) -> None:
    proc, parent = stopped_merge["proc"], stopped_merge["parent"]
    assert isinstance(proc, subprocess.Popen) and isinstance(parent, Path)
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGCONT)
    assert proc.wait(timeout=60) == 143
    log = Path(str(stopped_merge["log"])).read_text()
    assert log.count(MESSAGE) == 1 and "Traceback" not in log, log
    assert list(parent.iterdir()) == []  # no half checkpoint, no hidden temporary folder


def test_after_a_sigkill_the_same_command_removes_the_leftovers(
    stopped_merge: dict[str, object], tmp_path: Path
) -> None:
    proc, parent, tmp = stopped_merge["proc"], stopped_merge["parent"], stopped_merge["tmp"]
    assert isinstance(proc, subprocess.Popen) and isinstance(parent, Path)
    proc.send_signal(signal.SIGKILL)  # cannot be caught: the folder stays behind...
    proc.wait(timeout=60)
    assert isinstance(tmp, Path) and tmp.is_dir() and any(tmp.iterdir())  # partial shards
    again = _merge(Path(str(stopped_merge["cfg"])), parent / "out", tmp_path / "again.log")
    assert again.wait(timeout=300) == 0, (tmp_path / "again.log").read_text()
    assert [p.name for p in parent.iterdir()] == ["out"]  # ...until the next run
    assert (parent / "out" / "model.safetensors.index.json").is_file()


def test_a_full_disk_is_one_line_exit_2_and_leaves_nothing(
    tiny_models: dict[str, Path], small_disk, tmp_path: Path
) -> None:
    disk = small_disk("out", "96k")  # the merge needs ~180 KB
    models = {"base": tiny_models["base"], "ft": tiny_models["ft_a"]}
    cfg = _config(tmp_path / "merge.yaml", models)
    result = runner.invoke(app, ["merge", str(cfg), str(disk / "merged"), "--quiet"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no space left on the device of ")
    assert str(disk) in lines[0] and "free some space" in lines[0]
    assert list(disk.iterdir()) == []  # no partial shard, no temporary folder


def test_a_read_only_output_is_one_line_exit_2(
    tiny_models: dict[str, Path], small_disk, tmp_path: Path
) -> None:
    disk = small_disk("ro", "1m")
    small_disk.read_only(disk)
    models = {"base": tiny_models["base"], "ft": tiny_models["ft_a"]}
    cfg = _config(tmp_path / "merge.yaml", models)
    result = runner.invoke(app, ["merge", str(cfg), str(disk / "merged"), "--quiet"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {disk} is on a read-only file system")
    assert "Traceback" not in result.output


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_every_file_and_the_folder_follow_the_umask(umask: int, tmp_path: Path) -> None:
    """Weights used to be written 0600 (safetensors' temporary file) while the other files
    got 0644: a serving process running as another user could not read them."""
    old = os.umask(umask)
    try:
        out = write_checkpoint(
            iter(
                [("model.layers.0.weight", torch.ones(4, 4)), ("lm_head.weight", torch.ones(8, 4))]
            ),
            tmp_path / "out",
            config={"model_type": "llama"},
            base_dir=None,
            shard_size="64B",  # two shards and an index
        )
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert "model-00001-of-00002.safetensors" in modes and len(modes) >= 4
    assert set(modes.values()) == {0o666 & ~umask}, modes
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask
