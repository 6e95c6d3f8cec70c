"""ModelPool: a base model and its fine-tuned sources (full checkpoints or LoRA adapters)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from evomerge.exceptions import ArchitectureMismatchError, ConfigError
from evomerge.pool._arch import ModelShapes, TensorInfo, VocabCrop, check_architecture, count_layers
from evomerge.pool._checkpoint import Checkpoint, cast_to
from evomerge.pool._lora import LoraAdapter
from evomerge.pool._naming import classify_tensor, config_ties_embeddings

logger = logging.getLogger(__name__)

__all__ = ["ModelPool"]

Source = Checkpoint | LoraAdapter


class ModelPool:
    """A base model and N sources that share its architecture, read one tensor at a time.

    Built with :meth:`open`, which reads only configs and file headers and checks the
    architecture. Tensor accessors read from disk on every call (nothing is cached
    beyond file handles); callers that need tensors resident keep them. Accessors are
    safe to call from several threads. A pool pickles cheaply (paths and metadata; file
    handles are reopened on first use), so it can be sent to Ray actors.

    Source ``i`` is ``source_paths[i]``; a LoRA source's full weights are
    ``base + delta`` and its task vector is the adapter's low-rank update itself.
    """

    def __init__(
        self,
        *,
        base: Checkpoint,
        sources: Sequence[Source],
        source_names: Sequence[str],
        trust_remote_code: bool = False,
        allow_pickle: bool = False,
    ) -> None:
        if len(source_names) != len(sources):
            raise ConfigError(
                f"names: got {len(source_names)} name(s) for {len(sources)} source(s); give one per source"
            )
        self._base = base
        self._sources = list(sources)
        self.base_path: Path = base.path
        self.source_paths: list[Path] = [s.path for s in sources]
        self.source_names: list[str] = list(source_names)
        self.config: dict[str, Any] = base.config
        self.trust_remote_code = trust_remote_code
        self.allow_pickle = allow_pickle
        self.tensor_names: list[str] = list(base.names)
        self.num_layers: int = count_layers(self.tensor_names, self.config, where=base.path)
        self.vocab_crops: list[VocabCrop] = check_architecture(
            self._all_shapes(), self.tensor_names
        )
        self._rows = {c.tensor: c.cropped_to for c in self.vocab_crops}
        self._infos = {n: self._make_info(n) for n in self.tensor_names}

    @classmethod
    def open(
        cls,
        base: str | Path,
        sources: Sequence[str | Path],
        *,
        names: Sequence[str] | None = None,
        allow_pickle: bool = False,
        trust_remote_code: bool = False,
    ) -> ModelPool:
        """Open ``base`` (full weights) and ``sources`` (full weights or peft LoRA adapters).

        A source directory holding ``adapter_config.json`` is a LoRA adapter of ``base``.
        ``names`` label the sources (default: directory basenames, made unique).
        ``trust_remote_code`` is kept for components that load the model through
        transformers; the pool itself reads config.json as plain JSON.

        Raises:
            CheckpointError: a directory is missing or holds no usable weights.
            UnsafeCheckpointError: pickle weights without ``allow_pickle=True``.
            ArchitectureMismatchError: tensor names or shapes differ (vocab rows excepted).
            ConfigError: ``names`` has the wrong length or duplicates.
        """
        base_ck = Checkpoint.open(base, allow_pickle=allow_pickle)
        opened: list[Source] = []
        for s in sources:
            p = Path(s).expanduser()
            if (p / "adapter_config.json").is_file():
                opened.append(LoraAdapter.open(p, allow_pickle=allow_pickle))
            else:
                opened.append(Checkpoint.open(p, allow_pickle=allow_pickle))
        if names is None:
            labels = unique_names([s.path.name for s in opened])
        else:
            labels = [str(n) for n in names]
            dupes = sorted({n for n in labels if labels.count(n) > 1})
            if dupes or any(not n for n in labels):
                raise ConfigError(f"names: source names must be unique and non-empty, got {labels}")
        pool = cls(
            base=base_ck,
            sources=opened,
            source_names=labels,
            trust_remote_code=trust_remote_code,
            allow_pickle=allow_pickle,
        )
        logger.info(
            "model pool: base %s + %d source(s) (%s), %d tensors, %d layers",
            pool.base_path,
            len(opened),
            ", ".join(labels),
            len(pool.tensor_names),
            pool.num_layers,
        )
        return pool

    # -- metadata -----------------------------------------------------------------------

    @property
    def num_sources(self) -> int:
        return len(self._sources)

    def info(self, name: str) -> TensorInfo:
        """Shape (after any vocab crop), base dtype, layer index and module type of ``name``."""
        try:
            return self._infos[name]
        except KeyError:
            raise KeyError(f"no tensor {name!r} in the pool's base {self.base_path}") from None

    def infos(self) -> list[TensorInfo]:
        """Every tensor's info, in ``tensor_names`` order."""
        return [self._infos[n] for n in self.tensor_names]

    def is_lora(self, i: int) -> bool:
        return isinstance(self._source(i), LoraAdapter)

    def model_ref(self, i: int) -> str:
        """mergekit's reference to source ``i``: its path, or ``"BASE+ADAPTER"`` for a LoRA."""
        src = self._source(i)
        if isinstance(src, LoraAdapter):
            return f"{self.base_path}+{src.path}"
        return str(src.path)

    def nbytes(self, dtype: torch.dtype) -> int:
        """Bytes of one full model (all tensors, after vocab crops) stored in ``dtype``."""
        return sum(info.numel for info in self._infos.values()) * dtype.itemsize

    # -- tensors ------------------------------------------------------------------------

    def base_tensor(
        self, name: str, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
    ) -> torch.Tensor:
        """The base model's tensor ``name`` (vocab rows cropped) in ``dtype`` on ``device``."""
        self.info(name)
        return cast_to(
            self._crop(name, self._base.get(name, device=device)), dtype=dtype, device=device
        )

    def source_tensor(
        self,
        i: int,
        name: str,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> torch.Tensor:
        """Source ``i``'s full tensor ``name`` (LoRA: base + delta, summed in float32)."""
        src, _ = self._source(i), self.info(name)
        if isinstance(src, Checkpoint):
            t = src.get(name, device=device)
        else:
            t = self._lora_full(src, name, device=device)
        return cast_to(self._crop(name, t), dtype=dtype, device=device)

    def task_vector(
        self,
        i: int,
        name: str,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> torch.Tensor:
        """``source - base`` for tensor ``name``, computed in float32, then cast to ``dtype``.

        For a LoRA source without a replacing tensor this is the low-rank update itself
        (zeros where the adapter does not target ``name``).
        """
        src, info = self._source(i), self.info(name)
        if isinstance(src, LoraAdapter) and src.replaced_shape(name) is None:
            d = src.delta(name, self._base.shape(name), device=device)
            if d is None:
                return torch.zeros(info.shape, dtype=dtype, device=device)
            return cast_to(self._crop(name, d), dtype=dtype, device=device)
        if isinstance(src, Checkpoint):
            full = src.get(name, device=device)
        else:
            full = self._lora_full(src, name, device=device)
        tv = (
            self._crop(name, full).float()
            - self._crop(name, self._base.get(name, device=device)).float()
        )
        return cast_to(tv, dtype=dtype, device=device)

    def close(self) -> None:
        """Drop cached file handles (reopened on next use)."""
        self._base.close()
        for s in self._sources:
            s.close()

    def __repr__(self) -> str:
        return (
            f"ModelPool(base={str(self.base_path)!r}, sources={self.source_names}, "
            f"tensors={len(self.tensor_names)}, layers={self.num_layers})"
        )

    # -- helpers ------------------------------------------------------------------------

    def _source(self, i: int) -> Source:
        if not isinstance(i, int) or not 0 <= i < len(self._sources):
            raise IndexError(
                f"source index {i!r} out of range: the pool has {len(self._sources)} source(s)"
            )
        return self._sources[i]

    def _crop(self, name: str, t: torch.Tensor) -> torch.Tensor:
        rows = self._rows.get(name)
        if rows is None or t.shape[0] == rows:
            return t
        return t.narrow(0, 0, rows).clone()  # [rows, ...]: drop trailing vocab rows

    def _lora_full(
        self, src: LoraAdapter, name: str, *, device: str | torch.device
    ) -> torch.Tensor:
        rep = src.replaces(name, device=device)
        t = rep if rep is not None else self._base.get(name, device=device)
        d = src.delta(name, tuple(t.shape), device=device)
        return t if d is None else t.float() + d

    def _make_info(self, name: str) -> TensorInfo:
        layer, module = classify_tensor(name)
        shape = self._base.shape(name)
        if name in self._rows:
            shape = (self._rows[name], *shape[1:])
        return TensorInfo(
            name=name, shape=shape, dtype=self._base.dtype(name), layer=layer, module=module
        )

    def _all_shapes(self) -> list[ModelShapes]:
        base = self._base
        out = [
            ModelShapes(
                label="base",
                path=base.path,
                shapes={n: base.shape(n) for n in base.names},
                ties_embeddings=config_ties_embeddings(base.config),
            )
        ]
        for label, src in zip(self.source_names, self._sources, strict=True):
            if isinstance(src, Checkpoint):
                shapes = {n: src.shape(n) for n in src.names}
                ties = config_ties_embeddings(src.config)
            else:
                shapes = self._lora_shapes(label, src)
                ties = config_ties_embeddings(base.config)
            out.append(ModelShapes(label=label, path=src.path, shapes=shapes, ties_embeddings=ties))
        return out

    def _lora_shapes(self, label: str, src: LoraAdapter) -> dict[str, tuple[int, ...]]:
        """Shapes of base + adapter: the base's, except tensors the adapter stores whole."""
        shapes = {n: self._base.shape(n) for n in self._base.names}
        for n in src.replaced_tensors:
            shapes[n] = src.replaced_shape(n) or ()
        for n in src.target_tensors:
            if n not in shapes:
                raise ArchitectureMismatchError(
                    f"LoRA adapter {label!r} ({src.path}) targets tensor {n!r}, which base "
                    f"{self.base_path} lacks; is it an adapter of another model?"
                )
            expected = src.delta_shape(n)
            if expected != shapes[n]:
                raise ArchitectureMismatchError(
                    f"LoRA adapter {label!r} ({src.path}) updates {n!r} with shape {expected}, "
                    f"but the tensor has shape {shapes[n]} (check fan_in_fan_out and the base model)"
                )
        return shapes


def unique_names(names: Sequence[str]) -> list[str]:
    """Make labels unique by suffixing repeats: ``["ft", "ft"] -> ["ft", "ft-2"]``."""
    out: list[str] = []
    for n in names:
        cand, k = n or "source", 2
        while cand in out:
            cand, k = f"{n}-{k}", k + 1
        out.append(cand)
    return out
