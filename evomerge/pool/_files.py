"""Low-level weight files: safetensors headers, lazy per-file readers, pickle fallback.

A :class:`WeightFile` reads one tensor at a time. Safetensors files are opened with
``safe_open`` (memory-mapped; reading one tensor never loads the file) on first use and
the handle is cached. Pickle files (``.bin``/``.pt``/``.pth``) can only be read whole:
they are loaded once with ``torch.load(weights_only=True, mmap=True)`` and cached.
Handles are dropped when pickled and reopened lazily, so readers travel to Ray actors.
"""

from __future__ import annotations

import json
import logging
import struct
import threading
from pathlib import Path
from typing import Any

import torch

from evomerge.dtypes import SAFETENSORS_DTYPES
from evomerge.exceptions import CheckpointError

logger = logging.getLogger(__name__)

__all__ = [
    "ALLOW_PICKLE_HINT",
    "PICKLE_SUFFIXES",
    "TensorMeta",
    "WeightFile",
    "read_safetensors_header",
]

PICKLE_SUFFIXES = (".bin", ".pt", ".pth")

#: How to opt in to pickle weights, for every way evomerge is called.
ALLOW_PICKLE_HINT = (
    "if you trust their source, allow pickle: `models.allow_pickle: true` in run.yaml "
    "(search), --allow-pickle (evomerge merge / conflicts), allow_pickle=True (Python)"
)


# (shape, dtype) of one tensor, known without reading its data.
TensorMeta = tuple[tuple[int, ...], torch.dtype]


def read_safetensors_header(path: Path) -> dict[str, TensorMeta]:
    """Names, shapes and dtypes from a safetensors header (reads only the header bytes)."""
    try:
        with path.open("rb") as f:
            raw_len = f.read(8)
            if len(raw_len) != 8:
                raise CheckpointError(f"{path}: not a safetensors file (shorter than 8 bytes)")
            (n,) = struct.unpack("<Q", raw_len)
            if n > 100_000_000:
                raise CheckpointError(f"{path}: not a safetensors file (header length {n})")
            header = json.loads(f.read(n))
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read: {err.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{path}: corrupt safetensors header (invalid JSON)") from None
    out: dict[str, TensorMeta] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        code = SAFETENSORS_DTYPES.get(entry.get("dtype", ""))
        dtype = getattr(torch, code) if code is not None else None
        if dtype is None:
            raise CheckpointError(
                f"{path}: tensor {name!r} has unsupported dtype {entry.get('dtype')!r}; "
                f"supported: {', '.join(SAFETENSORS_DTYPES)}"
            )
        out[name] = (tuple(int(d) for d in entry["shape"]), dtype)
    return out


class WeightFile:
    """One weight file, read lazily; thread-safe for concurrent ``get`` calls."""

    def __init__(self, *, path: Path, pickle: bool) -> None:
        self.path = path
        self.pickle = pickle
        self._handle: Any = None  # safe_open handle or a loaded state dict
        self._lock = threading.Lock()

    def metadata(self) -> dict[str, TensorMeta]:
        """Names, shapes and dtypes of the tensors in this file."""
        if not self.pickle:
            return read_safetensors_header(self.path)
        return {k: (tuple(t.shape), t.dtype) for k, t in self._state_dict().items()}

    def get(self, name: str) -> torch.Tensor:
        """The tensor ``name`` as stored (CPU, original dtype)."""
        if self.pickle:
            return self._state_dict()[name]
        return self._safe_handle().get_tensor(name)

    def _safe_handle(self) -> Any:
        with self._lock:
            if self._handle is None:
                from safetensors import safe_open

                try:
                    self._handle = safe_open(str(self.path), framework="pt", device="cpu")
                except Exception as err:  # safetensors raises its own error types
                    raise CheckpointError(
                        f"{self.path}: cannot open safetensors file: {err}"
                    ) from err
            return self._handle

    def _state_dict(self) -> dict[str, torch.Tensor]:
        with self._lock:
            if self._handle is None:
                self._handle = _load_pickle(self.path)
            return self._handle

    def close(self) -> None:
        with self._lock:
            self._handle = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "pickle": self.pickle}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self.pickle = state["pickle"]
        self._handle = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"WeightFile({str(self.path)!r}, pickle={self.pickle})"


def _load_pickle(path: Path) -> dict[str, torch.Tensor]:
    logger.info("loading pickle checkpoint %s (weights_only=True)", path)
    try:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) format cannot be memory-mapped
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"{path}: cannot load pickle checkpoint with weights_only=True: {err}"
        ) from err
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{path}: expected a dict of tensors (a state dict), got {type(obj).__name__}"
        )
    return {str(k): v for k, v in obj.items()}
