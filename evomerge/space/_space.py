"""SearchSpace: the genome ``x in R^d`` <-> MergeRecipe, for one set of models.

Dimensions, in order (the optuna parameter names, see :mod:`evomerge.space._names`)::

    for group g, for filter f (the space's filters + "rest", or "all"):
        g{g}.{f}.{source}.{param}   per-source parameters, each source in pool order
        g{g}.{f}.all.{param}        shared parameters (slerp's t)
        g{g}.{f}.base.weight        the base model's share, when searched

so ``d = groups x filters x (sources x per-source params + shared params + base share)``.

Representation that mergekit reproduces exactly: a per-group value is written as a
gradient list with one entry per *layer* (each layer's group value), which mergekit reads
at ``t = layer / (num_layers - 1)``, i.e. at index ``layer``. (With a list of one entry per
*group*, mergekit would interpolate between groups instead of holding them constant.)
Tensors outside the layer stack (embeddings, final norm, lm_head) read ``t = 0``: they take
group 0's value, as they would in mergekit. Filters become mergekit conditional lists
``[{filter: self_attn, value: [...]}, {filter: mlp, value: [...]}, {value: [...]}]``, the
catch-all last. One group gives scalars instead of lists.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from evomerge.exceptions import SearchError
from evomerge.merge.methods import get_method
from evomerge.merge.recipe import MergeRecipe, ModelEntry, gradient_position
from evomerge.space._genome import Genome
from evomerge.space._names import BASE, SHARED, format_genome_name
from evomerge.space._spec import (
    BASE_WEIGHT,
    Bounds,
    SpaceSpec,
    per_source_params,
    sets_base_model,
    shared_params,
    source_limits,
)

__all__ = ["Dimension", "SearchSpace", "safe_source_name"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]+")


def safe_source_name(name: str) -> str:
    """A source name usable inside a parameter name (no dots or spaces)."""
    clean = _UNSAFE.sub("_", name).strip("_") or "model"
    return f"m_{clean}" if clean in (SHARED, BASE) else clean


@dataclass(frozen=True)
class Dimension:
    """One coordinate of the genome."""

    name: str
    group: int
    filter: str
    source: int | None  # index into sources; None for shared and base-share dimensions
    param: str  # a mergekit parameter name, or "base_weight"
    bounds: Bounds


class SearchSpace(Genome):
    """A :class:`SpaceSpec` bound to a base model and its sources.

    ``sources`` are the model references recipes use (``pool.model_ref(i)``), ``base`` the
    base model's reference (its path). ``names`` (default ``source0, source1, ...``) name
    the sources in parameter names. Instances are immutable and thread-safe.
    """

    dimensions: tuple[Dimension, ...]
    spec: SpaceSpec

    def __init__(
        self,
        *,
        spec: SpaceSpec,
        num_layers: int,
        base: str,
        sources: Sequence[str],
        names: Sequence[str] | None = None,
        dtype: str | None = None,
    ) -> None:
        if num_layers < 1:
            raise SearchError(f"num_layers must be >= 1, got {num_layers}")
        if not sources:
            raise SearchError("a search space needs at least one source model, got none")
        method = get_method(spec.method)
        low, high = source_limits(method)
        if high is not None and len(sources) > high:
            raise SearchError(
                f"method {spec.method} merges the base with at most {high} source(s), "
                f"got {len(sources)}: {list(sources)}; pick a method such as linear or ties for more"
            )
        if len(sources) < low:
            raise SearchError(
                f"method {spec.method} merges the base with at least {low} source(s), "
                f"got {len(sources)}: {list(sources)}"
            )
        names = list(names) if names is not None else [f"source{i}" for i in range(len(sources))]
        if len(names) != len(sources):
            raise SearchError(f"names has {len(names)} entries for {len(sources)} sources")
        safe = [safe_source_name(n) for n in names]
        if len(set(safe)) != len(safe):
            raise SearchError(
                f"source names must be distinct after cleaning, got {safe} from {names}"
            )
        self.spec = spec
        self.method = method
        self.per_source = per_source_params(method)
        self.shared = shared_params(method)
        self.num_layers = num_layers
        self.base = base
        self.sources = tuple(sources)
        self.names = tuple(safe)
        self.dtype = dtype
        self.num_groups = math.ceil(num_layers / spec.layer_granularity)
        self.dimensions = tuple(self._build_dimensions())

    # -- geometry -------------------------------------------------------------------

    def _build_dimensions(self) -> list[Dimension]:
        spec = self.spec
        dims: list[Dimension] = []
        for g in range(self.num_groups):
            for f in spec.group_filters:
                for s, sname in enumerate(self.names):
                    for p in self.per_source:
                        if p in spec.params:
                            name = format_genome_name(g, f, sname, p)
                            dims.append(Dimension(name, g, f, s, p, spec.params[p]))
                for p in self.shared:
                    if p in spec.params:
                        name = format_genome_name(g, f, SHARED, p)
                        dims.append(Dimension(name, g, f, None, p, spec.params[p]))
                if BASE_WEIGHT in spec.params:
                    name = format_genome_name(g, f, BASE, "weight")
                    dims.append(Dimension(name, g, f, None, BASE_WEIGHT, spec.params[BASE_WEIGHT]))
        return dims

    def x0(self) -> np.ndarray:
        """The start point: every parameter at its ``init`` (default: the middle of its
        bounds), so every source starts with the same weight."""
        return np.array([d.bounds.start for d in self.dimensions])

    def group_of_layer(self, layer: int) -> int:
        return layer // self.spec.layer_granularity

    def layers_of_group(self, group: int) -> range:
        g = self.spec.layer_granularity
        return range(group * g, min(self.num_layers, (group + 1) * g))

    # -- decode -----------------------------------------------------------------------

    def _setting(self, values: dict[tuple[int, str], float], *, one_minus: bool = False) -> Any:
        """Per (group, filter) values -> a mergekit setting (see the module docstring)."""

        def one(f: str) -> float | list[float]:
            def val(g: int) -> float:
                v = values[(g, f)]
                return float(1.0 - v) if one_minus else float(v)

            if self.num_groups == 1:
                return val(0)
            return [val(self.group_of_layer(layer)) for layer in range(self.num_layers)]

        if not self.spec.filters:
            return one("all")
        # mappings, as in YAML: MergeRecipe's validators turn them into Conditional entries
        conds: list[dict[str, Any]] = [{"filter": f, "value": one(f)} for f in self.spec.filters]
        conds.append({"value": one("rest")})  # the catch-all goes last
        return conds

    def decode(self, x: Sequence[float] | np.ndarray) -> MergeRecipe:
        """The MergeRecipe of genome ``x`` (values are used as given, not clipped)."""
        arr = self._check(x)
        by_key: dict[tuple[int | None, str], dict[tuple[int, str], float]] = {}
        for d, v in zip(self.dimensions, arr, strict=True):
            by_key.setdefault((d.source, d.param), {})[(d.group, d.filter)] = float(v)

        spec, method = self.spec, self.method
        global_params: dict[str, Any] = dict(spec.fixed)
        if spec.normalize is not None:
            global_params["normalize"] = spec.normalize
        models: list[ModelEntry] = []
        if BASE_WEIGHT in spec.params:
            share = by_key[(None, BASE_WEIGHT)]
            if method.base_share == "listed":
                models.append(
                    ModelEntry(model=self.base, parameters={"weight": self._setting(share)})
                )
            else:  # lambda = 1 - base share
                global_params["lambda"] = self._setting(share, one_minus=True)
        for s, ref in enumerate(self.sources):
            params = {p: self._setting(by_key[(s, p)]) for p in self.per_source if p in spec.params}
            models.append(ModelEntry(model=ref, parameters=params))
        for p in self.shared:
            if p in spec.params:
                global_params[p] = self._setting(by_key[(None, p)])
        base_model = self.base if sets_base_model(method) else None
        return MergeRecipe(
            merge_method=spec.method,
            base_model=base_model,
            models=tuple(models),
            parameters=global_params,
            dtype=self.dtype,
        )

    # -- encode -----------------------------------------------------------------------

    def _probe_name(self, layer: int, f: str) -> str:
        """A tensor name in ``layer`` that the filter ``f`` (and no earlier one) matches."""
        if f in ("all", "rest"):
            return f"model.layers.{layer}.__evomerge_rest__.weight"
        return f"model.layers.{layer}.{f}.__evomerge_probe__.weight"

    def encode(self, recipe: MergeRecipe) -> np.ndarray:
        """The genome of ``recipe``: each (group, filter) value averaged over the group's layers.

        Exact inverse of :meth:`decode`. Raises SearchError when the method differs or a
        searched parameter has no value in the recipe.
        """
        if recipe.merge_method != self.spec.method:
            raise SearchError(
                f"recipe method {recipe.merge_method!r} differs from the space's {self.spec.method!r}"
            )
        out = np.empty(self.dim)
        for i, d in enumerate(self.dimensions):
            vals = []
            for layer in self.layers_of_group(d.group):
                t = gradient_position(layer, self.num_layers)
                name = self._probe_name(layer, d.filter)
                if d.param == BASE_WEIGHT and self.method.base_share == "lambda":
                    lam = recipe.lookup("lambda", model=None, tensor_name=name, t=t)
                    v = None if lam is None else 1.0 - float(lam)
                elif d.param == BASE_WEIGHT:
                    v = recipe.lookup("weight", model=self.base, tensor_name=name, t=t)
                elif d.source is None:
                    v = recipe.lookup(d.param, model=None, tensor_name=name, t=t)
                else:
                    v = recipe.lookup(d.param, model=self.sources[d.source], tensor_name=name, t=t)
                if v is None:
                    raise SearchError(
                        f"recipe has no value for {d.name} (parameter {d.param!r} at layer {layer})"
                    )
                vals.append(float(v))
            out[i] = float(np.mean(vals))
        return out
