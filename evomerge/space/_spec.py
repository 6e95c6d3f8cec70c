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
from evomerge.merge.methods import BasePolicy, MergeMethod, Scope, get_method
from evomerge.space._dataflow_spec import DataflowSpec, load_dataflow_spec
from evomerge.space._names import FILTER_RE

__all__ = [
    "BASE_WEIGHT",
    "Bounds",
    "SpaceSpec",
    "load_space_spec",
    "per_source_params",
    "searchable_params",
    "sets_base_model",
    "shared_params",
    "shipped_space_names",
    "shipped_spaces_dir",
    "source_limits",
]

#: The searched share of the base model itself, for methods that have one (``base_share``).
BASE_WEIGHT = "base_weight"


# What a space may search is derived from the merge registry (each method's ParamSpecs,
# base policy, input counts and base_share); nothing here is per method name.


def per_source_params(method: MergeMethod) -> tuple[str, ...]:
    """Searchable parameters with one value per source model (weight, density, ...)."""
    return tuple(p.name for p in method.searchable if p.scope != Scope.GLOBAL)


def shared_params(method: MergeMethod) -> tuple[str, ...]:
    """Searchable parameters with one value for the whole merge (slerp's t, ...)."""
    return tuple(p.name for p in method.searchable if p.scope == Scope.GLOBAL)


def searchable_params(method: MergeMethod) -> tuple[str, ...]:
    share = (BASE_WEIGHT,) if method.base_share is not None else ()
    return per_source_params(method) + shared_params(method) + share


def sets_base_model(method: MergeMethod) -> bool:
    """Whether a decoded recipe names the base as ``base_model`` (task vectors against it)."""
    return method.base != BasePolicy.INPUT


def source_limits(method: MergeMethod) -> tuple[int, int | None]:
    """How many source models (besides the base) a space over ``method`` may bind."""
    if not sets_base_model(method):
        return max(1, method.min_inputs), method.max_inputs
    highs = [
        h
        for h in (
            method.max_inputs - 1 if method.max_inputs is not None else None,
            method.max_non_base,
        )
        if h is not None
    ]
    low = max(1, method.min_inputs - 1, method.min_non_base or 0)
    return low, min(highs) if highs else None


def _default_normalize(method: MergeMethod) -> bool | None:
    return bool(method.param("normalize").default) if "normalize" in method.param_names else None


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
        get_method(v)  # raises UnknownMethodError (a ValueError) listing the choices
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
        try:
            method = get_method(self.method)
        except ValueError:  # already reported by the field validator
            return self
        problems: list[str] = []
        searchable = searchable_params(method)
        choices = ", ".join(searchable) or "nothing (it has no continuous parameters)"
        if not self.params:
            problems.append(f"params: nothing is searched; name at least one of {choices}")
        for p, bounds in self.params.items():
            if p not in searchable:
                problems.append(
                    f"params.{p}: not searchable with {self.method}; choose from {choices}"
                )
            elif p != BASE_WEIGHT:
                spec = method.param(p)
                if not (spec.in_range(bounds.low) and spec.in_range(bounds.high)):
                    problems.append(
                        f"params.{p}: bounds [{bounds.low:g}, {bounds.high:g}] leave {p}'s allowed "
                        f"range {spec.range_text}; search within it"
                    )
        for p, value in self.fixed.items():
            if p in self.params or p == "normalize":
                problems.append(f"fixed.{p}: also searched or set elsewhere; keep one")
            elif p not in method.param_names or method.param(p).scope != Scope.GLOBAL:
                names = [q.name for q in method.params if q.scope == Scope.GLOBAL]
                problems.append(
                    f"fixed.{p}: not a merge-wide parameter of {self.method}; "
                    f"choose from {', '.join(names) or 'none'}"
                )
            else:
                try:
                    method.param(p).validate(value)
                except ValueError as err:
                    problems.append(f"fixed.{p}: {err}")
        if self.normalize is not None and _default_normalize(method) is None:
            problems.append(f"normalize: {self.method} has no normalize parameter; remove it")
        normalize = self.normalize if self.normalize is not None else _default_normalize(method)
        if BASE_WEIGHT in self.params and method.base_share == "lambda":
            if not normalize:
                problems.append(
                    f"params.base_weight: with {self.method} the base share s is written as lambda = 1 - s "
                    "over normalized task vectors; set normalize: true"
                )
            if "lambda" in self.fixed:
                problems.append(
                    "fixed.lambda: conflicts with the searched base_weight (lambda = 1 - base_weight)"
                )
        if BASE_WEIGHT in self.params and method.base_share == "listed" and normalize is False:
            problems.append(
                f"params.base_weight: a base share needs normalize: true with {self.method}"
            )
        w = self.params.get("weight")
        weights_summed = (
            "weight" in method.param_names and method.param("weight").scope == Scope.INPUT
        )
        if w is not None and weights_summed and normalize is not False and w.low <= 0:
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
