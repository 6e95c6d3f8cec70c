"""What a merge method is: a pure tensor function plus its parameter declarations.

A method is called once per tensor as ``method.fn(base, deltas, args, aux=..., out=...)``:

- ``base``: the base model's tensor ``[...]`` in the computation dtype;
- ``deltas``: the task vectors ``delta_i = source_i - base`` of the method's non-base
  inputs, a stacked tensor ``[N, ...]`` or a sequence of N tensors, in the recipe's order;
- ``args``: resolved parameters (:class:`MergeArgs`): globals, one mapping per delta, and
  the base's own mapping when the base is itself one of the merged inputs (``linear``, or
  ``nuslerp`` without a ``base_model``), with its position among them;
- ``aux``: optional per-delta precomputations (:class:`~evomerge.merge.methods.SourceAux`:
  magnitude ranks, DARE noise, ...). Missing entries are computed on the fly with the same
  functions, so a call with and without ``aux`` gives bit-identical results;
- ``out``: optional output tensor of ``base``'s shape (any floating dtype), written in place;
- ``workspace``: optional :class:`~evomerge.merge.methods.Workspace` of reusable scratch;
- ``seed``, ``tensor_name``: name the noise that random methods draw when ``aux`` lacks it.

Functions are pure (inputs are never modified) and thread-safe given distinct workspaces.

Methods follow mergekit 0.1.5's semantics for the same name and parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, Protocol

import torch
from pydantic import TypeAdapter, ValidationError

__all__ = [
    "REQUIRED",
    "BasePolicy",
    "MergeArgs",
    "MergeFn",
    "MergeMethod",
    "Need",
    "ParamSpec",
    "Scope",
]


class Scope(str, Enum):
    """Where a parameter is set (mergekit's ParameterScope)."""

    GLOBAL = "global"  # one value per tensor, from the recipe's top-level ``parameters``
    INPUT = "input"  # one value per input model, the base included when it is an input
    NON_BASE = "non_base"  # one value per input model other than the base


class BasePolicy(str, Enum):
    """How a method treats ``base_model``."""

    REQUIRED = "required"  # task vectors are taken against it (ties, slerp, ...)
    INPUT = "input"  # if set, it is one more input like the others (linear, passthrough, karcher)
    OPTIONAL = "optional"  # if set, task vectors are taken against it; if not, the models
    # themselves are merged (nuslerp, multislerp)


class Need(str, Enum):
    """Per-source precomputations a method can use (see :mod:`._aux`)."""

    MAGNITUDE_ORDER = "magnitude_order"  # int32 descending order of |delta| (top-k trimming)
    ASCENDING_ORDER = "ascending_order"  # int32 ascending order of |delta| (breadcrumbs)
    ROW_RANK = "row_rank"  # int32 rank of |delta| within each row (DELLA)
    NOISE = "noise"  # uniform integer noise (int16 range, held as int32) fixed by the seed (DARE, DELLA)
    NOISE_L1 = "noise_l1"  # L1 of delta kept under each noise threshold (DARE rescale)
    SLERP_STATS = "slerp_stats"  # norms and cosine of base and base + delta


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of a method: name, value type, scope and default (or REQUIRED).

    ``low``/``high``: the allowed range (inclusive; None: unbounded), checked wherever a
    value is given (recipes, gradients' end points, search-space bounds). ``search``: a
    continuous parameter that search spaces may search (within the range).
    """

    name: str
    type: Any
    scope: Scope
    default: Any = REQUIRED
    doc: str = ""
    low: float | None = None
    high: float | None = None
    search: bool = False
    _adapter: TypeAdapter[Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_adapter", TypeAdapter(self.type))

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def bounded(self) -> bool:
        return self.low is not None or self.high is not None

    @property
    def range_text(self) -> str:
        """The allowed range as an interval: ``[0, 1]``, ``[0, inf)``."""
        lo = "(-inf" if self.low is None else f"[{self.low:g}"
        hi = "inf)" if self.high is None else f"{self.high:g}]"
        return f"{lo}, {hi}"

    def in_range(self, value: float) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def validate(self, value: Any) -> Any:
        """Convert ``value`` to the parameter's type and check its range; raises ValueError
        saying what was expected."""
        try:
            out = self._adapter.validate_python(value)
        except ValidationError as err:
            msg = err.errors()[0]["msg"] if err.errors() else str(err)
            raise ValueError(f"{msg} (got {value!r})") from None
        if isinstance(out, int | float) and not isinstance(out, bool) and not self.in_range(out):
            raise ValueError(f"{out!r} is outside the allowed range {self.range_text}")
        return out


@dataclass(frozen=True)
class MergeArgs:
    """Resolved parameters for one tensor.

    ``inputs[i]`` belongs to ``deltas[i]``. ``base`` holds the base's own parameters when
    the base tensor is itself one of the merged inputs (``linear``'s base weight,
    ``passthrough``'s scale, ``nuslerp``'s first model without a ``base_model``); it is None
    when it is not, and ``base_index`` is then its position among the inputs in the recipe's
    order (the deltas keep theirs around it). ``merge_base`` is True when the base tensor is
    the recipe's ``base_model`` (task vectors are taken against it); False when the recipe
    has none, so that the base tensor only anchors ``source = base + delta``.
    """

    globals: Mapping[str, Any]
    inputs: Sequence[Mapping[str, Any]]
    base: Mapping[str, Any] | None = None
    models: Sequence[str] = ()  # model references of the deltas, for messages
    base_index: int = 0
    merge_base: bool = True

    def per_input(self, name: str) -> list[Any]:
        """The value of ``name`` for each delta, in order."""
        return [p[name] for p in self.inputs]

    def label(self, i: int) -> str:
        """How messages name delta ``i``: its model reference, else ``input i``."""
        return f"model {self.models[i]!r}" if i < len(self.models) else f"input {i}"


class MergeFn(Protocol):
    def __call__(
        self,
        base: torch.Tensor,
        deltas: torch.Tensor | Sequence[torch.Tensor],
        args: MergeArgs,
        *,
        aux: Sequence[Any] | None = None,
        out: torch.Tensor | None = None,
        workspace: Any = None,
        seed: int = 0,
        tensor_name: str = "",
    ) -> torch.Tensor: ...


@dataclass(frozen=True)
class MergeMethod:
    """A merge method: its pure function, parameters and input contract.

    ``check`` (optional) validates one tensor's resolved parameters and returns a list of
    problems (strings); the resolver collects them for every tensor before any work.
    ``min_inputs``/``max_inputs`` count the merge's inputs as mergekit does (the base
    included when it is an input or required); ``min_non_base``/``max_non_base`` count the
    inputs other than a ``base_model``. ``one_off_skips``: precomputations that a one-off
    (streaming) merge does without, because the method finds the same result in linear
    time per call (ties' top-k cut); the engine computes them once for all trials.
    ``base_share``: how a search writes the base model's own share, if the method has one:
    ``"listed"`` (the base is listed among the models with its own weight; linear) or
    ``"lambda"`` (``lambda = 1 - share`` over normalized task vectors; the task-arithmetic
    family).
    """

    name: str
    fn: MergeFn
    params: tuple[ParamSpec, ...]
    base: BasePolicy
    needs: frozenset[Need] = frozenset()
    one_off_skips: frozenset[Need] = frozenset()
    min_inputs: int = 1
    max_inputs: int | None = None
    min_non_base: int | None = None
    max_non_base: int | None = None
    check: Callable[[MergeArgs], list[str]] | None = None
    base_share: Literal["listed", "lambda"] | None = None
    description: str = ""
    reference: str = ""

    @property
    def random(self) -> bool:
        """Whether the method drops coordinates at random (its result depends on the seed)."""
        return Need.NOISE in self.needs

    @property
    def searchable(self) -> tuple[ParamSpec, ...]:
        """The continuous parameters a search space may search."""
        return tuple(p for p in self.params if p.search)

    def param(self, name: str) -> ParamSpec:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(
            f"merge method {self.name!r} has no parameter {name!r}. Valid: {', '.join(self.param_names)}"
        )

    @property
    def param_names(self) -> list[str]:
        return [p.name for p in self.params]
