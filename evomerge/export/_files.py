"""The non-weight files of a checkpoint: config, generation config, tokenizer, extras."""

from __future__ import annotations

import copy
import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from evomerge.dtypes import dtype_name
from evomerge.exceptions import ExportError

logger = logging.getLogger(__name__)

__all__ = [
    "TOKENIZER_FILES",
    "check_extra_files",
    "copy_tokenizer_files",
    "output_config",
    "write_extra_files",
    "write_generation_config",
    "write_json",
]

# Files a Hugging Face tokenizer may consist of (fast, sentencepiece, BPE, WordPiece).
TOKENIZER_FILES: tuple[str, ...] = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)
_TOKENIZER_GLOBS = ("*.tiktoken",)
_TOKENIZER_DIRS = ("additional_chat_templates",)


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def output_config(
    config: Mapping[str, Any], *, dtype: torch.dtype | None, vocab_size: int | None
) -> dict[str, Any]:
    """A copy of ``config`` with its dtype and vocab size set to what was written.

    Both ``dtype`` (transformers >= 4.56) and the older ``torch_dtype`` are updated where
    present; ``torch_dtype`` is added when neither is, since every version reads it.
    """
    out = copy.deepcopy(dict(config))
    if dtype is not None:
        keys = [k for k in ("dtype", "torch_dtype") if k in out] or ["torch_dtype"]
        for k in keys:
            out[k] = dtype_name(dtype)
    if vocab_size is not None and "vocab_size" in out and out["vocab_size"] != vocab_size:
        logger.info(
            "vocab_size: %s -> %d (the embedding rows written)", out["vocab_size"], vocab_size
        )
        out["vocab_size"] = vocab_size
    return out


def write_generation_config(
    out_dir: Path, *, base_dir: Path | None, config: Mapping[str, Any]
) -> None:
    """Copy the base's generation_config.json, or write a minimal one from ``config``."""
    src = base_dir / "generation_config.json" if base_dir is not None else None
    if src is not None and src.is_file():
        shutil.copyfile(src, out_dir / "generation_config.json")
        return
    gen: dict[str, Any] = {"_from_model_config": True}
    for key in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id"):
        if config.get(key) is not None:
            gen[key] = config[key]
    write_json(out_dir / "generation_config.json", gen)


def copy_tokenizer_files(base_dir: Path, out_dir: Path) -> list[str]:
    """Copy every tokenizer file found in ``base_dir``; returns the names copied."""
    names = [n for n in TOKENIZER_FILES if (base_dir / n).is_file()]
    for pattern in _TOKENIZER_GLOBS:
        names += sorted(p.name for p in base_dir.glob(pattern) if p.is_file())
    for name in names:
        shutil.copyfile(base_dir / name, out_dir / name)
    for d in _TOKENIZER_DIRS:
        if (base_dir / d).is_dir():
            shutil.copytree(base_dir / d, out_dir / d)
            names.append(d + "/")
    if names:
        logger.info("copied tokenizer files from %s: %s", base_dir, ", ".join(names))
    else:
        logger.warning("no tokenizer files in %s; the checkpoint will have no tokenizer", base_dir)
    return names


def check_extra_files(files: Mapping[str, str | bytes], *, reserved: set[str]) -> None:
    """Raise :class:`ExportError` unless every key is a safe relative path and not reserved.

    Reserved are ``reserved`` and every weight file name (``*.safetensors``, its index).
    """
    for rel, content in files.items():
        parts = PurePosixPath(rel).parts
        if not rel or PurePosixPath(rel).is_absolute() or ".." in parts or "\\" in rel:
            raise ExportError(f"extra_files: {rel!r} must be a relative path inside the checkpoint")
        if rel in reserved or rel.endswith((".safetensors", ".safetensors.index.json")):
            raise ExportError(
                f"extra_files: {rel!r} is written by the checkpoint writer itself; use another name"
            )
        if not isinstance(content, str | bytes):
            raise ExportError(
                f"extra_files[{rel!r}]: expected str or bytes, got {type(content).__name__}"
            )


def write_extra_files(out_dir: Path, files: Mapping[str, str | bytes]) -> None:
    """Write ``files`` (relative POSIX path -> text or bytes, see :func:`check_extra_files`)."""
    for rel, content in files.items():
        path = out_dir.joinpath(*PurePosixPath(rel).parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_bytes(content)
