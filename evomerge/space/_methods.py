"""Which merge parameters a search space may search, per merge method.

Each method's searchable parameters follow mergekit's scopes for the same method name:

- ``per_source``: one value per source model (mergekit's per-input ``weight``, ``density``,
  ``gamma``, ``epsilon``);
- ``shared``: one value for the whole merge (``t`` of slerp);
- ``base_weight``: how the base model's own share is written, when the method allows one:
  ``"listed"`` (linear: the base model is listed among the models with its own
  ``weight``; with ``normalize: true`` its share is ``w_base / sum(w)``), or ``"lambda"``
  (task-arithmetic family with ``normalize: true``: the merge is
  ``base + lambda * weighted_mean(task vectors)``, so a base share ``s`` is
  ``lambda = 1 - s``, i.e. ``theta = s * theta_base + (1 - s) * weighted_mean(theta_i)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["METHODS", "MethodInfo", "method_info"]


@dataclass(frozen=True)
class MethodInfo:
    """What a search space may search for one merge method."""

    per_source: tuple[str, ...]
    shared: tuple[str, ...] = ()
    base_weight: Literal["listed", "lambda"] | None = None
    needs_base: bool = True
    default_normalize: bool | None = None
    max_sources: int | None = None

    @property
    def searchable(self) -> tuple[str, ...]:
        extra = ("base_weight",) if self.base_weight is not None else ()
        return self.per_source + self.shared + extra


_GTA_FLAGS = ("weight", "density")

METHODS: dict[str, MethodInfo] = {
    "linear": MethodInfo(
        per_source=("weight",), base_weight="listed", needs_base=False, default_normalize=True
    ),
    "task_arithmetic": MethodInfo(
        per_source=("weight",), base_weight="lambda", default_normalize=False
    ),
    "ties": MethodInfo(per_source=_GTA_FLAGS, base_weight="lambda", default_normalize=True),
    "dare_ties": MethodInfo(per_source=_GTA_FLAGS, base_weight="lambda", default_normalize=False),
    "dare_linear": MethodInfo(per_source=_GTA_FLAGS, base_weight="lambda", default_normalize=False),
    "breadcrumbs": MethodInfo(
        per_source=(*_GTA_FLAGS, "gamma"), base_weight="lambda", default_normalize=False
    ),
    "breadcrumbs_ties": MethodInfo(
        per_source=(*_GTA_FLAGS, "gamma"), base_weight="lambda", default_normalize=False
    ),
    "della": MethodInfo(
        per_source=(*_GTA_FLAGS, "epsilon"), base_weight="lambda", default_normalize=True
    ),
    "della_linear": MethodInfo(
        per_source=(*_GTA_FLAGS, "epsilon"), base_weight="lambda", default_normalize=False
    ),
    # slerp between the base and one source (t = 0: base, t = 1: the source)
    "slerp": MethodInfo(per_source=(), shared=("t",), max_sources=1),
}


def method_info(name: str) -> MethodInfo:
    """The searchable parameters of ``name``; raises ValueError listing the choices."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(
            f"Unknown merge method {name!r} for a search space. Available: {', '.join(METHODS)}"
        ) from None
