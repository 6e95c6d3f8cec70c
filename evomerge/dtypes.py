"""Dtype names: the one table every config, header reader and writer uses.

Names are torch's (and config.json's, and mergekit's) spelling: ``float32``, ``bfloat16``,
``float16``, ``float64``. A leading ``torch.`` is accepted where mergekit accepts it.
Importing this module does not import torch; :func:`to_torch` does.

::

    to_torch("bfloat16")                       # torch.bfloat16
    to_torch("float64", allowed=WORKING_DTYPES, field="merge.dtype")   # ValueError naming the field
    dtype_name(torch.float16)                  # "float16"
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    import torch

__all__ = [
    "FLOAT_DTYPES",
    "SAFETENSORS_DTYPES",
    "WORKING_DTYPES",
    "check_dtype_name",
    "dtype_name",
    "to_torch",
]

#: Dtypes a model is merged, held and run in (run.yaml's ``merge.dtype``, generation).
WORKING_DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16")
#: Every floating dtype a recipe may name (mergekit's ``dtype`` / ``out_dtype``).
FLOAT_DTYPES: tuple[str, ...] = (*WORKING_DTYPES, "float64")
#: safetensors header codes -> torch names (what a checkpoint may hold).
SAFETENSORS_DTYPES: dict[str, str] = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
}


def dtype_name(dtype: torch.dtype | str) -> str:
    """``torch.bfloat16`` or ``"torch.bfloat16"`` -> ``"bfloat16"`` (config.json's spelling)."""
    return str(dtype).removeprefix("torch.")


def check_dtype_name(
    name: str, *, allowed: Iterable[str] = FLOAT_DTYPES, field: str = "dtype"
) -> str:
    """``name`` without a ``torch.`` prefix; ValueError naming ``field`` and the choices."""
    choices = tuple(allowed)
    plain = dtype_name(name)
    if plain not in choices:
        raise ValueError(f"{field}: unknown dtype {name!r}. Available: {', '.join(choices)}")
    return plain


def to_torch(
    name: str | torch.dtype,
    *,
    allowed: Iterable[str] = FLOAT_DTYPES,
    field: str = "dtype",
    error: type[Exception] = ValueError,
) -> torch.dtype:
    """The torch dtype called ``name`` (one of ``allowed``); ``error`` names ``field`` and
    the choices otherwise. A ``torch.dtype`` is checked the same way and returned."""
    import torch

    try:
        plain = check_dtype_name(dtype_name(name), allowed=allowed, field=field)
    except ValueError as err:
        raise error(str(err)) from None
    return cast("torch.dtype", getattr(torch, plain))
