"""Checkpoint: one local Hugging Face directory of full weights, read one tensor at a time."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from evomerge.exceptions import CheckpointError, UnsafeCheckpointError
from evomerge.pool._files import ALLOW_PICKLE_HINT, PICKLE_SUFFIXES, TensorMeta, WeightFile
from evomerge.pool._naming import natural_key

logger = logging.getLogger(__name__)

__all__ = ["Checkpoint", "cast_to", "read_config"]

_ST_INDEX = "model.safetensors.index.json"
_PT_INDEX = "pytorch_model.bin.index.json"
# Files next to the weights that are pickles but not weights (trainer state, adapters).
_NOT_WEIGHTS = frozenset(
    {
        "training_args.bin",
        "optimizer.pt",
        "scheduler.pt",
        "rng_state.pth",
        "adapter_model.bin",
        "adapter_model.safetensors",
    }
)
_EXPECTED = "model.safetensors, model.safetensors.index.json with its shards, or *.safetensors"


def cast_to(
    t: torch.Tensor, *, dtype: torch.dtype | None, device: str | torch.device
) -> torch.Tensor:
    """``t`` on ``device`` in ``dtype`` (None: keep); moves before casting to save bandwidth."""
    if torch.device(device) != t.device:
        t = t.to(device=device)
    if dtype is not None and t.dtype != dtype:
        t = t.to(dtype=dtype)
    return t


def read_config(path: Path) -> dict[str, Any]:
    """``config.json`` of a model directory as a dict ({} when absent)."""
    cfg = path / "config.json"
    if not cfg.is_file():
        logger.warning("%s has no config.json; layer count comes from tensor names", path)
        return {}
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # ValueError: bad JSON, not UTF-8
        raise CheckpointError(f"{cfg}: cannot parse config.json: {err}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{cfg}: expected a JSON object, got {type(data).__name__}")
    return data


class Checkpoint:
    """Full weights in one local Hugging Face directory (single or sharded).

    Built with :meth:`open`. Only headers are read at open; :meth:`get` reads one tensor
    (safetensors: memory-mapped, never the whole file). File handles are cached, dropped
    on pickling and reopened on first use. ``get`` is safe to call from several threads.
    """

    path: Path
    config: dict[str, Any]
    names: list[str]

    def __init__(
        self,
        *,
        path: Path,
        config: dict[str, Any],
        files: list[WeightFile],
        meta: dict[str, TensorMeta],
        where: dict[str, int],
    ) -> None:
        self.path = path
        self.config = config
        self._files = files
        self._meta = meta
        self._where = where
        self.names = sorted(meta, key=natural_key)

    @classmethod
    def open(cls, path: str | Path, *, allow_pickle: bool = False) -> Checkpoint:
        """Open a model directory; reads config.json and the weight files' headers.

        Raises:
            CheckpointError: the directory is missing, holds no weights, is a LoRA adapter,
                or its index names a shard or tensor that is not there.
            UnsafeCheckpointError: only pickle weights were found and ``allow_pickle`` is False.
        """
        root = Path(path).expanduser().absolute()
        if not root.exists():
            raise CheckpointError(f"{root}: model directory does not exist")
        if not root.is_dir():
            raise CheckpointError(f"{root}: expected a Hugging Face model directory, got a file")
        files = _discover_files(root, allow_pickle=allow_pickle)
        meta: dict[str, TensorMeta] = {}
        where: dict[str, int] = {}
        for i, wf in enumerate(files):
            for name, m in wf.metadata().items():
                if name in meta:
                    raise CheckpointError(
                        f"{root}: tensor {name!r} is stored twice ({files[where[name]].path.name} "
                        f"and {wf.path.name}); remove the duplicate file or add an index"
                    )
                meta[name] = m
                where[name] = i
        _check_index(root, files, where)
        if not meta:
            raise CheckpointError(f"{root}: the weight files hold no tensors; expected {_EXPECTED}")
        logger.debug("opened %s: %d tensors in %d file(s)", root, len(meta), len(files))
        return cls(path=root, config=read_config(root), files=files, meta=meta, where=where)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._lookup(name)[0]

    def dtype(self, name: str) -> torch.dtype:
        return self._lookup(name)[1]

    def get(
        self, name: str, *, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
    ) -> torch.Tensor:
        """Tensor ``name`` on ``device`` in ``dtype`` (None: as stored)."""
        self._lookup(name)
        t = self._files[self._where[name]].get(name)
        return cast_to(t, dtype=dtype, device=device)

    def _lookup(self, name: str) -> TensorMeta:
        try:
            return self._meta[name]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor {name!r} ({len(self._meta)} tensors)") from None

    @property
    def is_pickle(self) -> bool:
        return any(f.pickle for f in self._files)

    def close(self) -> None:
        """Drop cached file handles (they are reopened on the next ``get``)."""
        for f in self._files:
            f.close()

    def __contains__(self, name: object) -> bool:
        return name in self._meta

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return (
            f"Checkpoint({str(self.path)!r}, {len(self.names)} tensors, {len(self._files)} file(s))"
        )


def _discover_files(root: Path, *, allow_pickle: bool) -> list[WeightFile]:
    index = root / _ST_INDEX
    if index.is_file():
        return [WeightFile(path=p, pickle=False) for p in _index_shards(index)]
    if (root / "model.safetensors").is_file():
        return [WeightFile(path=root / "model.safetensors", pickle=False)]
    st = [p for p in sorted(root.glob("*.safetensors")) if p.name not in _NOT_WEIGHTS]
    if st:
        return [WeightFile(path=p, pickle=False) for p in st]
    pt_index = root / _PT_INDEX
    if pt_index.is_file():
        pickles = _index_shards(pt_index)
    else:
        pickles = [
            p
            for p in sorted(root.iterdir())
            if p.suffix in PICKLE_SUFFIXES and p.name not in _NOT_WEIGHTS and p.is_file()
        ]
    if pickles and not allow_pickle:
        raise UnsafeCheckpointError(
            f"{root}: only pickle weights found ({', '.join(p.name for p in pickles)}); loading "
            f"pickle can run arbitrary code. Convert them to safetensors, or, {ALLOW_PICKLE_HINT}"
        )
    if pickles:
        return [WeightFile(path=p, pickle=True) for p in pickles]
    if (root / "adapter_config.json").is_file():
        raise CheckpointError(
            f"{root}: this is a LoRA adapter (adapter_config.json), not full weights; "
            "use it as a source next to its base model"
        )
    raise CheckpointError(f"{root}: no weights found; expected {_EXPECTED}")


def _read_weight_map(index: Path) -> dict[str, str]:
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # ValueError: bad JSON, not UTF-8
        raise CheckpointError(f"{index}: cannot parse index: {err}") from None
    wm = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(wm, dict) or not wm:
        raise CheckpointError(f"{index}: expected a non-empty 'weight_map' {{tensor: shard file}}")
    return {str(k): str(v) for k, v in wm.items()}


def _index_shards(index: Path) -> list[Path]:
    shards: list[Path] = []
    for shard in dict.fromkeys(_read_weight_map(index).values()):
        p = index.parent / shard
        if not p.is_file():
            raise CheckpointError(f"{index}: names shard {shard!r}, but {p} does not exist")
        shards.append(p)
    return shards


def _check_index(root: Path, files: list[WeightFile], where: dict[str, int]) -> None:
    """Every tensor an index maps to a shard must be in that shard."""
    for name in (_ST_INDEX, _PT_INDEX):
        index = root / name
        if not index.is_file() or files[0].pickle != (name == _PT_INDEX):
            continue
        for tensor, shard in _read_weight_map(index).items():
            if tensor not in where or files[where[tensor]].path.name != Path(shard).name:
                raise CheckpointError(
                    f"{index}: maps tensor {tensor!r} to {shard!r}, but that shard does not hold it"
                )
