"""Turning a recipe and a pool into per-tensor method arguments, validating everything first.

:func:`plan_merge` checks the whole recipe against the pool before any tensor work and
raises one :class:`MergeError` listing every problem (model references, base model,
input counts, unknown or misplaced parameters, missing or ill-typed values, per-tensor
checks such as DELLA's epsilon range). Its result says, for every tensor, which pool
sources feed the method and with which parameters.

Inputs follow mergekit: the recipe's models in order, then the base model appended when
``base_model`` is set but not listed. Parameters resolve per tensor from the model's own
``parameters``, then the global ones, then the method default; global-scope parameters
(normalize, lambda, t, ...) are read from the global ``parameters`` only. Gradients are
read at ``t = layer / (num_layers - 1)`` (0 outside the layer stack).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from evomerge.dtypes import FLOAT_DTYPES, to_torch
from evomerge.exceptions import MergeError
from evomerge.merge._models import BASE, lora_base_mismatch, match_model
from evomerge.merge._validate import recipe_problems
from evomerge.merge.methods import BasePolicy, MergeArgs, MergeMethod, Scope, get_method
from evomerge.merge.recipe import MergeRecipe, gradient_position

if TYPE_CHECKING:
    from evomerge.pool import ModelPool

__all__ = [
    "MergePlan",
    "Slot",
    "TensorPlan",
    "parse_dtype",
    "plan_merge",
    "resolve_tensor",
]

_MAX_LISTED = 3  # tensor names shown per problem


def parse_dtype(name: str | None, *, field: str = "dtype") -> torch.dtype | None:
    """mergekit's dtype names (``bfloat16``, ``torch.float16``, ...); None stays None."""
    if name is None:
        return None
    return to_torch(name, allowed=FLOAT_DTYPES, field=field, error=MergeError)


@dataclass(frozen=True)
class Slot:
    """One input of the merge: the recipe's ``model`` and its pool ``source`` (BASE: the base)."""

    model: str
    source: int
    is_base: bool  # the recipe's base_model (mergekit's base input)


@dataclass(frozen=True)
class TensorPlan:
    """What the method gets for one tensor: the pool sources of its deltas and its arguments."""

    name: str
    sources: tuple[int, ...]
    args: MergeArgs


@dataclass(frozen=True)
class MergePlan:
    method: MergeMethod
    slots: tuple[Slot, ...]
    tensors: tuple[TensorPlan, ...]
    dtype: torch.dtype | None  # computation dtype (None: each tensor's base dtype)
    out_dtype: torch.dtype | None  # returned dtype (None: the computation dtype)

    @property
    def delta_sources(self) -> tuple[int, ...]:
        """Pool sources whose task vectors the method uses (the same for every tensor)."""
        return self.tensors[0].sources if self.tensors else ()


def _slots(recipe: MergeRecipe, pool: ModelPool, problems: list[str]) -> list[Slot]:
    slots: list[Slot] = []
    base_src: int | None = None
    if recipe.base_model is not None:
        base_src = match_model(recipe.base_model, pool)
        if base_src != BASE:
            problems.append(
                f"base_model: {recipe.base_model!r} is not the pool's base model ({pool.base_path})"
            )
    for k, ref in enumerate(recipe.model_names()):
        src = match_model(ref, pool)
        if src is None:
            refs = [str(pool.base_path), *(pool.model_ref(i) for i in range(pool.num_sources))]
            problems.append(
                f"models[{k}].model: {ref!r} is not in the model pool (it has: {', '.join(refs)})"
            )
            continue
        if (p := lora_base_mismatch(ref, pool)) is not None:
            problems.append(f"models[{k}].model: {p}")
        if any(s.source == src for s in slots):
            problems.append(f"models[{k}].model: {ref!r} is listed twice; list each model once")
            continue
        slots.append(Slot(ref, src, is_base=recipe.base_model is not None and src == BASE))
    if recipe.base_model is not None and base_src == BASE and not any(s.is_base for s in slots):
        slots.append(Slot(recipe.base_model, BASE, is_base=True))
    return slots


def resolve_tensor(
    recipe: MergeRecipe,
    method: MergeMethod,
    slots: tuple[Slot, ...],
    name: str,
    t: float,
    problems: list[str],
) -> TensorPlan:
    """The method's arguments for tensor ``name`` at gradient position ``t``; problems appended."""

    def value(p: Any, model: str | None) -> Any:
        try:
            v = recipe.lookup(p.name, model=model, tensor_name=name, t=t, validate=p.validate)
        except ValueError as err:
            where = f"model {model!r}" if model is not None else "parameters"
            problems.append(f"{where}: parameter {p.name!r}: {err}")
            return p.default
        if v is None:
            if p.required:
                where = f"model {model!r}" if model is not None else "the top-level parameters"
                problems.append(
                    f"missing required parameter {p.name!r} for {where}; set it in the recipe"
                )
            return p.default
        return v

    glob = {p.name: value(p, None) for p in method.params if p.scope == Scope.GLOBAL}
    inputs: list[Mapping[str, Any]] = []
    sources: list[int] = []
    models: list[str] = []
    base_args: dict[str, Any] | None = None
    base_index = 0
    position = 0  # among the merged inputs (every slot but a base_model taken as the origin)
    for slot in slots:
        if slot.is_base and method.base != BasePolicy.INPUT:
            continue  # the origin of the task vectors
        if slot.source == BASE:  # the base tensor is itself one of the inputs
            base_args = {
                p.name: value(p, slot.model) for p in method.params if p.scope != Scope.GLOBAL
            }
            base_index = position
        else:
            inputs.append(
                {p.name: value(p, slot.model) for p in method.params if p.scope != Scope.GLOBAL}
            )
            sources.append(slot.source)
            models.append(slot.model)
        position += 1
    args = MergeArgs(
        globals=glob,
        inputs=tuple(inputs),
        base=base_args,
        models=tuple(models),
        base_index=base_index,
        merge_base=recipe.base_model is not None,
    )
    if method.check is not None:
        problems.extend(method.check(args))
    return TensorPlan(name, tuple(sources), args)


def plan_merge(recipe: MergeRecipe, pool: ModelPool) -> MergePlan:
    """Validate ``recipe`` against ``pool`` and resolve every tensor's arguments.

    Raises:
        UnknownMethodError: the recipe's merge method is not registered (lists the choices).
        MergeError: every other problem, all listed in one message.
    """
    method = get_method(recipe.merge_method)
    problems: list[str] = []
    dtype = out_dtype = None
    for field in ("dtype", "out_dtype"):
        try:
            parsed = parse_dtype(getattr(recipe, field), field=field)
        except MergeError as err:
            problems.append(str(err))
            continue
        if field == "dtype":
            dtype = parsed
        else:
            out_dtype = parsed
    problems.extend(recipe_problems(recipe, method))
    slots = _slots(recipe, pool, problems)
    if problems:  # parameters cannot be resolved sensibly against a broken structure
        raise _error(recipe, [(p, None) for p in problems])
    per_tensor: list[tuple[str, str | None]] = []
    tensors = []
    for name in pool.tensor_names:
        info = pool.info(name)
        found: list[str] = []
        tensors.append(
            resolve_tensor(
                recipe,
                method,
                tuple(slots),
                name,
                gradient_position(info.layer, pool.num_layers),
                found,
            )
        )
        per_tensor.extend((p, name) for p in found)
    if per_tensor:
        raise _error(recipe, per_tensor)
    return MergePlan(method, tuple(slots), tuple(tensors), dtype, out_dtype or dtype)


def _error(recipe: MergeRecipe, problems: list[tuple[str, str | None]]) -> MergeError:
    """One MergeError with each distinct problem once, naming a few of the tensors it affects."""
    grouped: dict[str, list[str]] = defaultdict(list)
    for msg, tensor in problems:
        names = grouped[msg]
        if tensor is not None:
            names.append(tensor)
    lines = []
    for msg, names in grouped.items():
        if names:
            shown = ", ".join(names[:_MAX_LISTED]) + (
                f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
            )
            msg = f"{msg} (tensor{'s' if len(names) > 1 else ''} {shown})"
        lines.append(f"  - {msg}")
    return MergeError(
        f"recipe for merge method {recipe.merge_method!r}: {len(lines)} problem(s)\n"
        + "\n".join(lines)
    )
