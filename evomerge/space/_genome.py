"""What every search space's genome shares: named, bounded coordinates in a fixed order.

:class:`SearchSpace` and :class:`DataflowSpace` each build their ``dimensions`` (a tuple of
items with ``name`` and ``bounds``); this base turns them into the arrays and
``{name: value}`` mappings samplers use, and checks a genome's length and values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from evomerge.exceptions import SearchError
from evomerge.space._spec import Bounds

__all__ = ["Genome"]


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class _Coordinate(_Named, Protocol):
    @property
    def bounds(self) -> Bounds: ...


class Genome:
    """Base of the search spaces: subclasses set ``dimensions`` and ``spec`` (its ``name``
    is used in errors)."""

    dimensions: tuple[_Coordinate, ...]
    spec: _Named

    @property
    def dim(self) -> int:
        return len(self.dimensions)

    @property
    def names_in_order(self) -> list[str]:
        return [d.name for d in self.dimensions]

    @property
    def lower(self) -> np.ndarray:
        return np.array([d.bounds.low for d in self.dimensions])

    @property
    def upper(self) -> np.ndarray:
        return np.array([d.bounds.high for d in self.dimensions])

    def to_params(self, x: Sequence[float] | np.ndarray) -> dict[str, float]:
        """``x`` as a ``{parameter name: value}`` dict (optuna's ``trial.params``)."""
        arr = self._check(x)
        return {d.name: float(v) for d, v in zip(self.dimensions, arr, strict=True)}

    def from_params(self, params: Mapping[str, float]) -> np.ndarray:
        """The inverse of :meth:`to_params`; a missing name is a SearchError."""
        missing = [d.name for d in self.dimensions if d.name not in params]
        if missing:
            raise SearchError(
                f"trial parameters lack {len(missing)} genome dimension(s), e.g. {missing[:3]}"
            )
        return np.array([float(params[d.name]) for d in self.dimensions])

    def _check(self, x: Sequence[float] | np.ndarray) -> np.ndarray:
        arr = np.asarray(x, dtype=np.float64).reshape(-1)  # (d,)
        if arr.shape[0] != self.dim:
            raise SearchError(
                f"genome has {arr.shape[0]} values, space {self.spec.name} needs {self.dim}"
            )
        if not np.all(np.isfinite(arr)):
            raise SearchError(f"genome has non-finite values: {arr.tolist()}")
        return arr
