"""write_checkpoint: stream merged tensors into a complete Hugging Face checkpoint, atomically."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from evomerge.atomic import atomic_directory, check_out_dir
from evomerge.exceptions import ExportError
from evomerge.export._files import (
    check_extra_files,
    copy_tokenizer_files,
    output_config,
    write_extra_files,
    write_generation_config,
    write_json,
)
from evomerge.export._shards import ShardWriter, tensor_nbytes
from evomerge.export._sizes import parse_size
from evomerge.pool import vocab_role

logger = logging.getLogger(__name__)

__all__ = ["MERGE_CONFIG_NAME", "write_checkpoint"]

MERGE_CONFIG_NAME = "mergekit_config.yml"  # mergekit's name for the config it ran


def write_checkpoint(
    tensors: Iterable[tuple[str, torch.Tensor]],
    out_dir: str | Path,
    *,
    config: Mapping[str, Any],
    base_dir: str | Path | None,
    shard_size: int | str = "5GB",
    out_dtype: torch.dtype | None = None,
    merge_config_yaml: str | None = None,
    extra_files: Mapping[str, str | bytes] | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write ``tensors`` and the files around them as a loadable checkpoint in ``out_dir``.

    ``tensors`` is consumed once, in order; only the shard being filled (at most
    ``shard_size`` bytes, e.g. ``"5GB"``, ``"500MB"``, ``"2GiB"``) is held in memory, and a
    tensor must not be modified after it is yielded. Floating tensors are cast to
    ``out_dtype`` when given. Tensors are written as given: nothing is added, so a model
    with tied embeddings and no ``lm_head`` in the stream gets none.

    Written: ``model.safetensors`` or ``model-0000i-of-0000N.safetensors`` with
    ``model.safetensors.index.json``; ``config.json`` (``config`` with its dtype set to the
    dtype written and ``vocab_size`` to the embedding rows written);
    ``generation_config.json`` and the tokenizer files, copied from ``base_dir`` (a minimal
    generation config when the base has none); ``mergekit_config.yml`` when
    ``merge_config_yaml`` is given; then ``extra_files`` (relative path -> text or bytes,
    e.g. a model card), which may replace copied files but not weights or config.json.

    Atomic: everything is built in ``.<name>.tmp-<random>`` next to ``out_dir`` and renamed
    into place at the end; on any error or KeyboardInterrupt nothing is left behind.
    A non-empty ``out_dir`` is refused unless ``overwrite=True`` (it is then replaced only
    once the new checkpoint is complete). Raises :class:`ExportError`. Returns ``out_dir``.
    """
    max_bytes = parse_size(shard_size)
    out = check_out_dir(out_dir, overwrite=overwrite)
    base = Path(base_dir) if base_dir is not None else None
    if base is not None and not base.is_dir():
        raise ExportError(
            f"base_dir: {str(base)!r} is not a directory; pass the base model's folder or None"
        )
    if out_dtype is not None and not out_dtype.is_floating_point:
        raise ExportError(
            f"out_dtype: expected a floating dtype such as torch.bfloat16, got {out_dtype}"
        )
    reserved = {"config.json"} | ({MERGE_CONFIG_NAME} if merge_config_yaml is not None else set())
    check_extra_files(extra_files or {}, reserved=reserved)

    with atomic_directory(out, overwrite=overwrite) as tmp:
        writer = ShardWriter(out_dir=tmp, max_shard_bytes=max_bytes)
        stats = _stream(tensors, writer, out_dtype=out_dtype, progress=progress)
        files = writer.finalize()
        dtype = out_dtype or stats.main_dtype()
        write_json(
            tmp / "config.json", output_config(config, dtype=dtype, vocab_size=stats.vocab_rows())
        )
        write_generation_config(tmp, base_dir=base, config=config)
        if base is not None:
            copy_tokenizer_files(base, tmp)
        if merge_config_yaml is not None:
            (tmp / MERGE_CONFIG_NAME).write_text(merge_config_yaml, encoding="utf-8")
        write_extra_files(tmp, extra_files or {})
    logger.info(
        "wrote %d tensors (%.2f GB in %d weight file(s)) to %s",
        stats.count,
        writer.total_size / 1e9,
        sum(f.endswith(".safetensors") for f in files),
        out,
    )
    return out


class _StreamStats:
    """What the config needs to know about the tensors written."""

    def __init__(self) -> None:
        self.count = 0
        self.dtype_bytes: Counter[torch.dtype] = Counter()
        self.embed_rows: int | None = None
        self.head_rows: int | None = None

    def observe(self, name: str, t: torch.Tensor) -> None:
        self.count += 1
        if t.is_floating_point():
            self.dtype_bytes[t.dtype] += tensor_nbytes(t)
        role = vocab_role(name) if t.dim() == 2 else None
        if role == "embed":
            self.embed_rows = t.shape[0]
        elif role == "head":
            self.head_rows = t.shape[0]

    def main_dtype(self) -> torch.dtype | None:
        return self.dtype_bytes.most_common(1)[0][0] if self.dtype_bytes else None

    def vocab_rows(self) -> int | None:
        return self.embed_rows if self.embed_rows is not None else self.head_rows


def _stream(
    tensors: Iterable[tuple[str, torch.Tensor]],
    writer: ShardWriter,
    *,
    out_dtype: torch.dtype | None,
    progress: bool,
) -> _StreamStats:
    stats = _StreamStats()
    with tqdm(desc="Writing checkpoint", unit="B", unit_scale=True, disable=not progress) as bar:
        for item in tensors:
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)):
                raise ExportError(
                    f"tensors: expected (name, tensor) pairs, got {type(item).__name__}"
                )
            name, t = item
            if not isinstance(t, torch.Tensor):
                raise ExportError(
                    f"tensor {name!r}: expected a torch.Tensor, got {type(t).__name__}"
                )
            if out_dtype is not None and t.is_floating_point() and t.dtype != out_dtype:
                t = t.to(out_dtype)
            stats.observe(name, t)
            writer.add(name, t)
            bar.update(tensor_nbytes(t))
    return stats
