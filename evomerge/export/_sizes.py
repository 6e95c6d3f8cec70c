"""Parsing human-readable byte sizes ("5GB", "500MB", "2GiB") as Hugging Face does."""

from __future__ import annotations

import re

from evomerge.exceptions import ExportError

__all__ = ["parse_size"]

# Decimal units are powers of 1000 and binary units powers of 1024, as in transformers'
# ``max_shard_size`` ("5GB" is 5 * 10**9 bytes, "2GiB" is 2 * 2**30 bytes).
_UNITS: dict[str, int] = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*$")


def parse_size(size: int | str, *, name: str = "shard_size") -> int:
    """Bytes in ``size``: an int, or a number with a unit (B, KB, MB, GB, TB, KiB, ... TiB).

    Units are case-insensitive; a bare number is bytes. Raises :class:`ExportError` naming
    ``name`` when the value cannot be parsed or is not positive.
    """
    if isinstance(size, bool):
        raise ExportError(f"{name}: expected a size like '5GB', got {size!r}")
    if isinstance(size, int):
        value = size
    elif (
        isinstance(size, str)
        and (m := _SIZE_RE.match(size))
        and m.group(2).lower() in _UNITS | {"": 1}
    ):
        number, unit = m.groups()
        value = int(float(number) * _UNITS.get(unit.lower(), 1))
    else:
        units = ", ".join(u.upper().replace("I", "i") for u in _UNITS)
        raise ExportError(
            f"{name}: cannot parse {size!r} as a size; use a byte count or a number with "
            f"a unit ({units}), e.g. '5GB', '500MB', '2GiB'"
        )
    if value <= 0:
        raise ExportError(f"{name}: must be positive, got {size!r}")
    return value
