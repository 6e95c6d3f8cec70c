"""Memory accounting for the merge engine: what it keeps resident, and what a device has."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from evomerge.merge.methods import Need
from evomerge.merge.methods._aux import NOISE_LEVELS, NOISE_TABLE_MIN, chunk_size

if TYPE_CHECKING:
    from evomerge.pool import ModelPool

logger = logging.getLogger(__name__)

__all__ = ["available_bytes", "estimate_resident_bytes", "format_bytes"]

_MARGIN_FRACTION = 0.10
_MARGIN_MIN = 1 << 30  # keep at least 1 GiB free for the generator, Python, allocator slack


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def estimate_resident_bytes(
    pool: ModelPool,
    dtype: torch.dtype,
    needs: Iterable[Need],
    n_sources: int,
    device: torch.device | None = None,
) -> int:
    """Bytes the engine keeps resident (see :class:`~evomerge.merge.MergeEngine`)."""
    needs = set(needs)
    infos = pool.infos()
    numel = sum(i.numel for i in infos)
    item = dtype.itemsize
    per_element = item * (2 + n_sources)  # base + N task vectors + output
    if Need.MAGNITUDE_ORDER in needs:
        per_element += 4 * n_sources
    if Need.ASCENDING_ORDER in needs:
        per_element += 4 * n_sources
    if Need.ROW_RANK in needs:
        per_element += 4 * n_sources
    if Need.NOISE in needs or Need.NOISE_L1 in needs:
        per_element += 4 * n_sources  # int32 noise
    total = numel * per_element
    if Need.NOISE_L1 in needs:
        big = sum(1 for i in infos if i.numel >= NOISE_TABLE_MIN)
        total += big * n_sources * (NOISE_LEVELS + 1) * 4
    total += (n_sources + 8) * chunk_size(device or torch.device("cpu")) * 8  # kernel scratch
    return total


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def available_bytes(device: torch.device) -> int | None:
    """Free memory on ``device`` minus a safety margin (10%, at least 1 GiB); None if unknown."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        margin = max(_MARGIN_MIN, int(_MARGIN_FRACTION * total))
        return max(0, free - margin)
    if device.type == "cpu":
        avail = _meminfo_available()
        if avail is None:
            logger.warning(
                "cannot read MemAvailable from /proc/meminfo; the engine's memory is not checked"
            )
            return None
        return max(0, avail - max(_MARGIN_MIN, int(_MARGIN_FRACTION * avail)))
    logger.warning(
        "no memory query for device %s; pass max_bytes to check the engine's memory", device
    )
    return None
