"""The engine's precomputations on disk, keyed by content, shared by processes on one node.

Building a :class:`~evomerge.merge.MergeEngine` is dominated by sorting each task vector's
magnitudes (TIES, breadcrumbs) the way mergekit does: about one mergekit merge's worth of
work. A :class:`PrecomputeCache` keeps each result in a folder (a search keeps it in the
run directory, ``merge_cache/``), so it is paid once per set of models: by the first
worker, never by the others nor by a resumed run.

- Keys: a hash of what the result depends on. Orders and ranks: the task vector's bytes,
  dtype and shape, and the torch version (the order among equal magnitudes is the one
  this build's sort leaves). Noise: the seed, tensor name, source key and size. DARE's L1
  table: both. Changing a model changes its key; nothing stale is ever read.
- Files: ``<key[:2]>/<key>.safetensors``, written atomically (a reader sees a whole file
  or none); noise is stored as int16 (its range), other tensors as computed.
- Several processes: each entry is computed under an exclusive lock on
  ``<key>.lock``. :meth:`PrecomputeCache.fill` never waits for a lock another process
  holds (it returns what it could not do), so workers starting together split the work;
  a second pass with ``wait=True`` then picks up what the others computed. Threads of one
  process (the engine fills its sources concurrently) exclude each other the same way:
  each opens its own descriptor, and ``flock`` locks are per descriptor.

Disk use: 4 bytes per parameter and source for each order/rank kept, 2 for noise.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from evomerge.atomic import atomic_write
from evomerge.merge.methods import Need, SourceAux, build_aux
from evomerge.merge.methods._aux import NOISE_TABLE_MIN, TENSOR_FIELDS

logger = logging.getLogger(__name__)

__all__ = ["CACHED_NEEDS", "PrecomputeCache"]

_FORMAT = "1"
#: Precomputations worth keeping: the tensors (the cheap ones, L1 norms and slerp
#: statistics, are redone).
CACHED_NEEDS: dict[Need, str] = dict(TENSOR_FIELDS)
_BY_CONTENT = {Need.MAGNITUDE_RANK, Need.ASCENDING_RANK, Need.ROW_RANK, Need.NOISE_L1}
_BY_NAME = {Need.NOISE, Need.NOISE_L1}


def _content_digest(delta: torch.Tensor) -> bytes:
    """blake2b of the task vector's bytes (CPU copy if needed), dtype and shape."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{delta.dtype}|{tuple(delta.shape)}".encode())
    flat = delta.detach().reshape(-1).contiguous().cpu()
    h.update(memoryview(flat.view(torch.uint8).numpy()))  # type: ignore[arg-type]
    return h.digest()


class PrecomputeCache:
    """A folder of precomputations (see the module docstring). Safe across processes."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0
        self._counting = threading.Lock()  # fill runs on several threads at once

    def _count(self, *, hit: bool) -> None:
        with self._counting:
            if hit:
                self.hits += 1
            else:
                self.misses += 1

    def __repr__(self) -> str:
        return f"PrecomputeCache({str(self.root)!r})"

    def _key(
        self, need: Need, digest: bytes, *, seed: int, tensor_name: str, source_key: str, numel: int
    ) -> str:
        h = hashlib.blake2b(digest_size=20)
        h.update(f"{_FORMAT}|{need.value}|torch {torch.__version__}".encode())
        if need in _BY_CONTENT:
            h.update(digest)
        if need in _BY_NAME:
            h.update(f"|{int(seed)}|{tensor_name}|{source_key}|{numel}".encode())
        return h.hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def _read(self, key: str, device: torch.device) -> torch.Tensor | None:
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            t = load_file(str(path))["v"]
        except Exception as err:  # a damaged file: recompute (and overwrite) it
            logger.warning("ignoring unreadable cache entry %s: %s", path, err)
            return None
        if t.dtype == torch.int16:
            t = t.to(torch.int32)  # noise is stored in its range, used as int32
        return t.to(device)

    def _write(self, key: str, value: torch.Tensor, *, noise: bool) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        stored = value.detach().cpu()
        if noise:  # int16 values held as int32: store the 2 bytes that carry them
            stored = stored.to(torch.int16)
        try:
            # no fsync: an entry lost to a power cut is only recomputed
            atomic_write(path, save({"v": stored.contiguous()}), durable=False)
        except OSError as err:  # a full disk must not fail the merge: the value is in memory
            logger.warning("cannot write merge cache entry %s: %s", path, err)

    @contextlib.contextmanager
    def _lock(self, key: str, *, wait: bool) -> Iterator[bool]:
        """Hold ``<key>.lock`` exclusively; yields False (at once) if busy and not ``wait``."""
        path = self._path(key).with_suffix(".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # closing releases the lock

    def fill(
        self,
        needs: Iterable[Need],
        base: torch.Tensor,
        delta: torch.Tensor,
        *,
        seed: int,
        tensor_name: str,
        source_key: str,
        previous: SourceAux | None = None,
        wait: bool = True,
    ) -> tuple[SourceAux, bool]:
        """:func:`~evomerge.merge.methods.build_aux` through the cache: ``(aux, complete)``.

        Each cached need is read from disk, or computed and stored under its lock. With
        ``wait=False`` a need whose lock another process holds is skipped (``complete`` is
        then False): call again with ``wait=True`` later to read what it computed.
        """
        needs = set(needs)
        aux = build_aux(
            needs - set(CACHED_NEEDS),
            base,
            delta,
            seed=seed,
            tensor_name=tensor_name,
            source_key=source_key,
            previous=previous,
        )
        digest: bytes | None = None
        complete = True
        # noise before its L1 table, which is built from it
        for need in sorted(needs & set(CACHED_NEEDS), key=lambda n: n != Need.NOISE):
            field = CACHED_NEEDS[need]
            if getattr(aux, field) is not None or (
                need == Need.NOISE_L1 and not _wants_noise_l1(delta)
            ):
                continue
            if digest is None and need in _BY_CONTENT:
                digest = _content_digest(delta)
            key = self._key(
                need,
                digest or b"",
                seed=seed,
                tensor_name=tensor_name,
                source_key=source_key,
                numel=delta.numel(),
            )
            value = self._read(key, delta.device)
            if value is None:
                with self._lock(key, wait=wait) as held:
                    if not held:
                        complete = False
                        continue
                    value = self._read(key, delta.device)  # another process may have finished
                    if value is None:
                        self._count(hit=False)
                        built = build_aux(
                            {need},
                            base,
                            delta,
                            seed=seed,
                            tensor_name=tensor_name,
                            source_key=source_key,
                            previous=aux,
                        )
                        value = getattr(built, field)
                        assert value is not None
                        self._write(key, value, noise=need == Need.NOISE)
                    else:
                        self._count(hit=True)
            else:
                self._count(hit=True)
            fields: dict[str, torch.Tensor] = {field: value}
            aux = replace(aux, **fields)  # type: ignore[arg-type]
        return aux, complete


def _wants_noise_l1(delta: torch.Tensor) -> bool:
    return delta.numel() >= NOISE_TABLE_MIN  # build_aux makes tables for large tensors only
