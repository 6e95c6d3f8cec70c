"""TIES-style magnitude trimming of task vectors, per tensor or over a whole model.

Rule (both scopes): keep exactly ``k = max(1, int(density * n))`` entries, those of the
largest ``|tau|``; entries whose magnitude ties with the k-th largest are kept in order
(row-major flat index within a tensor; in global scope tensors in the order they are
analysed) until ``k`` are kept. This is a *stable* descending sort of ``|tau|`` cut after
``k`` entries (``numpy.argsort(-abs(x), kind="stable")[:k]``); mergekit's ``magnitude``
sparsification keeps the same ``k`` entries whenever there are no ties at the cut.
Trimmed entries become 0. ``density >= 1`` trims nothing.

The cut is described by a :class:`Threshold`: the k-th largest magnitude ``value`` and
how many of the entries equal to it are kept (``ties_to_keep``).

The threshold is found exactly, with bounded memory, by a two-pass radix selection over
the IEEE-754 bit patterns of ``|tau|`` (for non-negative float32 numbers the int32 bit
pattern orders like the value): pass 1 counts the high 16 bits of every
entry (65,536 bins), which locates the bin holding the k-th largest; pass 2 counts the low
16 bits of the entries in that bin only. The result is the exact float32 threshold (no
approximation); memory is two int64[65536] histograms per model plus one tensor at a time.
Global scope streams the passes over every tensor of a model; tensor scope runs both on
the one tensor in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "Threshold",
    "ThresholdFinder",
    "TieBudget",
    "apply_trim",
    "keep_count",
    "tensor_threshold",
]

_BINS = 1 << 16
_CHUNK = 1 << 22  # entries per histogram chunk (bounds the int32/int64 temporaries)


def keep_count(numel: int, density: float) -> int:
    """How many entries of ``numel`` a trim at ``density`` keeps (mergekit's rule)."""
    if density >= 1.0 or numel == 0:
        return numel
    return min(numel, max(1, int(density * numel)))


@dataclass(frozen=True)
class Threshold:
    """A top-k cut: keep ``|x| > value``, and the first ``ties_to_keep`` entries with ``|x| == value``."""

    value: float
    ties_to_keep: int
    k: int


class TieBudget:
    """How many tied entries at a threshold may still be kept; consumed in analysis order."""

    def __init__(self, threshold: Threshold) -> None:
        self.threshold = threshold
        self.remaining = threshold.ties_to_keep


def tensor_threshold(absx: torch.Tensor, density: float) -> Threshold | None:
    """The exact cut of one tensor's float32 magnitudes ``absx`` at ``density`` (None: keep all).

    The same radix selection as the global scope, run on one tensor in memory (faster than
    ``torch.kthvalue`` on CPU and exact).
    """
    finder = ThresholdFinder(density=density)
    finder.add_high(absx)
    if finder.needs_second_pass():
        finder.add_low(absx)
    return finder.result()


def apply_trim(
    x: torch.Tensor, budget: TieBudget | None, absx: torch.Tensor | None = None
) -> torch.Tensor:
    """Zero the entries of contiguous ``x`` below the cut, in place; tied entries consume ``budget``.

    ``absx`` may pass ``x.abs()`` when the caller has it. Call once per tensor, in the
    order the threshold was computed for (global scope).
    """
    if budget is None:
        return x
    value = budget.threshold.value
    if value == 0.0:  # every non-zero entry is kept; kept or not, zeros stay zero
        return x
    flat = x.view(-1)
    absx = flat.abs() if absx is None else absx.reshape(-1)
    keep = absx > value
    tied = (absx == value).nonzero().view(-1)
    take = min(budget.remaining, tied.numel())
    if take:
        keep[tied[:take]] = True
        budget.remaining -= take
    flat.mul_(keep)
    return x


def _count(values: torch.Tensor) -> np.ndarray:
    """Histogram of int values in [0, 65536): int64[65536]."""
    if values.device.type == "cpu":
        return np.bincount(values.numpy(), minlength=_BINS)
    return torch.bincount(values.long(), minlength=_BINS).cpu().numpy()


def _bits(absx: torch.Tensor) -> torch.Tensor:
    return absx.contiguous().view(torch.int32)  # non-negative float32 orders as its int32 bits


class ThresholdFinder:
    """Exact top-k threshold of one model's ``|tau|``, streamed tensor by tensor (or of one tensor).

    Call order: :meth:`add_high` for every tensor, then :meth:`needs_second_pass`; if it is
    True, :meth:`add_low` for every tensor (same tensors, any order); then :meth:`result`.
    Not thread-safe. Magnitudes must be finite float32 values.
    """

    def __init__(self, *, density: float) -> None:
        self.density = density
        self.numel = 0
        self._hi = np.zeros(_BINS, dtype=np.int64)
        self._lo = np.zeros(_BINS, dtype=np.int64)
        self._bin: int | None = None
        self._above = 0  # entries in bins above the selected one

    def add_high(self, absx: torch.Tensor) -> None:
        """Pass 1: count the high 16 bits of the magnitudes in ``absx`` (any shape)."""
        flat = absx.reshape(-1)
        self.numel += flat.numel()
        for start in range(0, flat.numel(), _CHUNK):
            hi = _bits(flat[start : start + _CHUNK]) >> 16
            self._hi += _count(hi)

    @property
    def k(self) -> int:
        return keep_count(self.numel, self.density)

    def needs_second_pass(self) -> bool:
        """Select the bin holding the k-th largest; False when nothing is trimmed."""
        if self.k >= self.numel:
            return False
        desc = np.cumsum(self._hi[::-1])  # desc[j]: entries in the top j+1 bins
        j = int(np.searchsorted(desc, self.k))  # first j with desc[j] >= k
        self._bin = _BINS - 1 - j
        self._above = int(desc[j] - self._hi[self._bin])
        return True

    def add_low(self, absx: torch.Tensor) -> None:
        """Pass 2: count the low 16 bits of the entries that fall in the selected bin."""
        if self._bin is None:
            raise RuntimeError("ThresholdFinder.add_low before needs_second_pass() returned True")
        flat = absx.reshape(-1)
        for start in range(0, flat.numel(), _CHUNK):
            bits = _bits(flat[start : start + _CHUNK])
            low = bits[(bits >> 16) == self._bin] & 0xFFFF
            if low.numel():
                self._lo += _count(low)

    def result(self) -> Threshold | None:
        """The exact cut (None: the model is not trimmed)."""
        if self._bin is None:
            return None
        need = self.k - self._above
        desc = np.cumsum(self._lo[::-1])
        j = int(np.searchsorted(desc, need))
        low = _BINS - 1 - j
        greater = self._above + int(desc[j] - self._lo[low])
        bits = np.array([(self._bin << 16) | low], dtype=np.int32)
        value = float(bits.view(np.float32)[0])
        return Threshold(value=value, ties_to_keep=self.k - greater, k=self.k)
