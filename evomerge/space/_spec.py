"""SpaceSpec: a search space as written in ``search_spaces/*.yaml``.

::

    name: ties_layerwise
    method: ties                 # a merge method (see evomerge.merge.methods)
    layer_granularity: 4         # layers per group: 32 layers -> 8 groups
    filters: [self_attn, mlp]    # optional: these and "rest" get separate values
    params:                      # searched parameters and their bounds
      weight: {low: 0.0, high: 1.0}
      density: {low: 0.1, high: 1.0, init: 0.5}   # init: the start point (default: middle)
      base_weight: {low: 0.0, high: 0.5}          # the base model's share, where allowed
    normalize: true              # optional: mergekit's normalize
    fixed: {int8_mask: false}    # optional: fixed global parameters

Shipped spaces live in ``evomerge/data/search_spaces`` and are named by their file stem.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from evomerge._yaml import load_yaml, validate_model
from evomerge.exceptions import ConfigError
from evomerge.space._dataflow_spec import DataflowSpec, load_dataflow_spec
from evomerge.space._methods import METHODS, method_info
from evomerge.space._names import FILTER_RE

__all__ = ["Bounds", "SpaceSpec", "load_space_spec", "shipped_space_names", "shipped_spaces_dir"]


class Bounds(BaseModel):
    """The interval a parameter is searched in, and its start value (default: the middle)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    low: float
    high: float
    init: float | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Bounds:
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low >= self.high:
            raise ValueError(f"need finite low < high, got low={self.low}, high={self.high}")
        if self.init is not None and not self.low <= self.init <= self.high:
            raise ValueError(f"init={self.init} is outside [{self.low}, {self.high}]")
        return self

    @property
    def start(self) -> float:
        return self.init if self.init is not None else (self.low + self.high) / 2


class SpaceSpec(BaseModel):
    """A validated search space (not yet bound to models: see :class:`SearchSpace`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str = ""
    method: str
    layer_granularity: int = Field(1, ge=1)
    filters: tuple[str, ...] = ()
    params: dict[str, Bounds]
    normalize: bool | None = None
    fixed: dict[str, bool | int | float | str] = Field(default_factory=dict)

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        method_info(v)  # raises ValueError listing the choices
        return v

    @field_validator("filters")
    @classmethod
    def _distinct_filters(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        problems = [
            f"{f!r} is not a plain name (letters, digits, _ . -)"
            for f in v
            if not FILTER_RE.match(f)
        ]
        problems += [
            f"{f!r} is reserved (the catch-all group is added for you)"
            for f in v
            if f in ("rest", "all")
        ]
        if len(set(v)) != len(v):
            problems.append(f"duplicates in {list(v)}")
        for i, a in enumerate(v):
            for b in v[i + 1 :]:
                if a != b and a in b:
                    problems.append(
                        f"{a!r} comes before {b!r} and is a substring of it, so {b!r} would never match; put {b!r} first"
                    )
        if problems:
            raise ValueError("; ".join(problems))
        return v

    @model_validator(mode="after")
    def _consistent(self) -> SpaceSpec:
        info = METHODS.get(self.method)
        if info is None:  # already reported by the field validator
            return self
        problems: list[str] = []
        if not self.params:
            problems.append(
                "params: nothing is searched; name at least one of " + ", ".join(info.searchable)
            )
        for p in self.params:
            if p not in info.searchable:
                problems.append(
                    f"params.{p}: not searchable with {self.method}; choose from {', '.join(info.searchable)}"
                )
        for p in self.fixed:
            if p in self.params or p == "normalize":
                problems.append(f"fixed.{p}: also searched or set elsewhere; keep one")
        normalize = self.normalize if self.normalize is not None else info.default_normalize
        if "base_weight" in self.params and info.base_weight == "lambda":
            if not normalize:
                problems.append(
                    f"params.base_weight: with {self.method} the base share s is written as lambda = 1 - s "
                    "over normalized task vectors; set normalize: true"
                )
            if "lambda" in self.fixed:
                problems.append(
                    "fixed.lambda: conflicts with the searched base_weight (lambda = 1 - base_weight)"
                )
        if info.base_weight == "listed" or self.method == "linear":
            if normalize is False and "base_weight" in self.params:
                problems.append(
                    "params.base_weight: a base share needs normalize: true with linear"
                )
            w = self.params.get("weight")
            if w is not None and normalize is not False and w.low <= 0:
                problems.append(
                    f"params.weight.low: normalized weights divide by their sum; use low > 0 (got {w.low}) "
                    "so the sum is never zero"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def group_filters(self) -> tuple[str, ...]:
        """The filter names of the genome: the given filters plus ``rest``, or ``all``."""
        return (*self.filters, "rest") if self.filters else ("all",)


def shipped_spaces_dir() -> Path:
    """The folder of the search spaces shipped with evomerge."""
    return Path(str(resources.files("evomerge") / "data" / "search_spaces"))


def shipped_space_names() -> list[str]:
    return sorted(p.stem for p in shipped_spaces_dir().glob("*.yaml"))


def _deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_space_spec(
    space: str | Path | Mapping[str, Any],
    *,
    base_dir: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> SpaceSpec | DataflowSpec:
    """A shipped space by name, a YAML file (relative to ``base_dir``) or an inline mapping.
    A mapping with ``type: dataflow`` is a :class:`DataflowSpec` (paths in it are resolved
    against ``base_dir`` too).

    ``overrides`` are merged over the loaded mapping (nested mappings key by key), e.g.
    ``{"layer_granularity": 8, "params": {"weight": {"high": 2.0}}}``.
    Raises ConfigError naming the source and every bad field.
    """
    if isinstance(space, Mapping):
        data, source = dict(space), "<inline space>"
    else:
        text = str(space)
        names = shipped_space_names()
        if text in names:
            path = shipped_spaces_dir() / f"{text}.yaml"
        else:
            path = Path(text)
            if not path.is_absolute() and base_dir is not None:
                path = Path(base_dir) / path
            if not path.exists():
                raise ConfigError(
                    f"Unknown search space {text!r}: not a file ({path}) nor a shipped space. "
                    f"Available: {', '.join(names)}"
                )
        data, source = load_yaml(path), str(path)
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"{source}: expected a mapping at the top level, got {type(data).__name__}"
            )
        data = dict(data)
        data.setdefault("name", path.stem)
    if overrides:
        data = _deep_merge(data, overrides)
        source += " (with overrides)"
    kind = data.get("type")
    if kind == "dataflow":
        return load_dataflow_spec(data, source=source, base_dir=base_dir)
    if kind is not None:
        raise ConfigError(
            f"{source}: type: unknown space type {kind!r}; use 'dataflow' for layer paths, "
            "or leave type out for a weight (parameter-space) merge"
        )
    return validate_model(SpaceSpec, data, source=source)
