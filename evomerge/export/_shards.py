"""Streaming named tensors into sharded safetensors files with Hugging Face's naming."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from evomerge.atomic import DISK_ERRNOS, publish, write_error
from evomerge.exceptions import ExportError

logger = logging.getLogger(__name__)

__all__ = ["ShardWriter", "tensor_nbytes"]

_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def _shard_error(err: Exception, path: Path) -> Exception:
    """A full disk, a read-only file system or a missing permission as one clear line
    (:class:`WriteError`); anything else as an :class:`ExportError` naming the shard."""
    code = err.errno if isinstance(err, OSError) else None
    m = _OS_ERROR.search(str(err))
    if code is None and m is not None:
        code = int(m.group(1))
    if code in DISK_ERRNOS:
        return write_error(OSError(code, os.strerror(code)), path.parent, what="a weight shard")
    return ExportError(f"cannot write shard {path}: {err}")


def tensor_nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class ShardWriter:
    """Collects tensors into shards of at most ``max_shard_bytes`` and writes each when full.

    Call :meth:`add` for every tensor, then :meth:`finalize` once. Only the shard being
    filled is held in memory (a tensor larger than the limit gets a shard of its own). The
    writer keeps a reference to each added tensor until its shard is written, so callers
    must not modify a tensor after adding it. Shards are written under provisional names
    and renamed at the end to ``model-00001-of-0000N.safetensors`` plus
    ``model.safetensors.index.json`` (or a single ``model.safetensors`` with no index).
    Not thread-safe. Raises :class:`ExportError` on duplicate names or write failures
    (:class:`WriteError` for a full disk, a read-only file system or no permission).
    Shards get the umask's file mode.
    """

    def __init__(self, *, out_dir: Path, max_shard_bytes: int, basename: str = "model") -> None:
        if max_shard_bytes <= 0:
            raise ExportError(f"max_shard_bytes: must be positive, got {max_shard_bytes}")
        self.out_dir = Path(out_dir)
        self.max_shard_bytes = max_shard_bytes
        self.basename = basename
        self.total_size = 0
        self._names: set[str] = set()
        self._shard: dict[str, torch.Tensor] = {}
        self._shard_bytes = 0
        self._shard_spans: list[tuple[int, int]] = []  # byte ranges held by the shard
        self._shard_files: list[str] = []  # provisional names, in order
        self._weight_map: dict[str, int] = {}  # tensor name -> shard index
        self._finalized = False

    def add(self, name: str, tensor: torch.Tensor) -> None:
        """Queue ``tensor`` (moved to CPU, made contiguous) under ``name``."""
        if self._finalized:
            raise ExportError("ShardWriter.add called after finalize")
        if not isinstance(tensor, torch.Tensor):
            raise ExportError(
                f"tensor {name!r}: expected a torch.Tensor, got {type(tensor).__name__}"
            )
        if name in self._names:
            raise ExportError(f"tensor {name!r} was given twice; every tensor name must be unique")
        t = tensor.detach().to("cpu").contiguous()
        if self._overlaps_shard(t):
            t = t.clone()  # safetensors refuses overlapping tensors in one file (tied weights)
        nbytes = tensor_nbytes(t)
        if self._shard and self._shard_bytes + nbytes > self.max_shard_bytes:
            self._flush()
        self._names.add(name)
        self._shard[name] = t
        if t.numel():
            self._shard_spans.append((t.data_ptr(), t.data_ptr() + tensor_nbytes(t)))
        self._shard_bytes += nbytes
        self.total_size += nbytes

    def finalize(self) -> list[str]:
        """Write the last shard, give shards their final names, write the index if needed.

        Returns the file names written, relative to ``out_dir``.
        """
        if self._finalized:
            raise ExportError("ShardWriter.finalize called twice")
        self._flush()
        self._finalized = True
        n = len(self._shard_files)
        if n == 0:
            raise ExportError("no tensors were given; nothing to write")
        if n == 1:
            final = [f"{self.basename}.safetensors"]
        else:
            final = [f"{self.basename}-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        for provisional, name in zip(self._shard_files, final, strict=True):
            (self.out_dir / provisional).rename(self.out_dir / name)
        if n == 1:
            return final
        index = {
            "metadata": {"total_size": self.total_size},
            "weight_map": {k: final[i] for k, i in sorted(self._weight_map.items())},
        }
        index_name = f"{self.basename}.safetensors.index.json"
        (self.out_dir / index_name).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        return [*final, index_name]

    def _overlaps_shard(self, t: torch.Tensor) -> bool:
        if not t.numel():
            return False
        start, end = t.data_ptr(), t.data_ptr() + tensor_nbytes(t)
        return any(start < e and s < end for s, e in self._shard_spans)

    def _flush(self) -> None:
        if not self._shard:
            return
        i = len(self._shard_files)
        provisional = f".{self.basename}-part-{i + 1:05d}.safetensors"
        path = self.out_dir / provisional
        logger.debug(
            "writing shard %d (%d tensors, %d bytes) to %s",
            i + 1,
            len(self._shard),
            self._shard_bytes,
            path,
        )
        try:
            save_file(self._shard, str(path), metadata={"format": "pt"})
            publish(path)  # safetensors writes 0600; the umask decides, as for other files
        except Exception as err:  # safetensors raises its own SafetensorError, not OSError
            raise _shard_error(err, path) from err
        for name in self._shard:
            self._weight_map[name] = i
        self._shard_files.append(provisional)
        self._shard = {}
        self._shard_bytes = 0
        self._shard_spans = []
