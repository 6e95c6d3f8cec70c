"""Turning config strings (``device``, ``dtype``) into torch objects, with clear errors."""

from __future__ import annotations

import re

import torch

from evomerge.dtypes import WORKING_DTYPES, to_torch
from evomerge.exceptions import GenerationError

__all__ = ["resolve_device", "resolve_dtype"]


def resolve_device(device: str | torch.device) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when available, else CPU).

    Raises GenerationError for other strings or a CUDA device that is not there.
    """
    text = str(device)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", text)
    if m is None:
        raise GenerationError(f"device {text!r} is not supported; use cpu, cuda, cuda:N or auto")
    if not torch.cuda.is_available():
        raise GenerationError(
            f"device {text!r} requested but CUDA is not available; use device 'cpu' or 'auto'"
        )
    index = int(m.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise GenerationError(
            f"device {text!r} requested but only {torch.cuda.device_count()} CUDA device(s) are visible"
        )
    return torch.device("cuda", index)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` is float32 on CPU and bfloat16 on CUDA; else float32, bfloat16 or float16."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return to_torch(name, allowed=WORKING_DTYPES, field="dtype", error=GenerationError)
