"""Checks of a recipe against its merge method that need no model: run at config time.

:func:`check_recipe` reports, in one :class:`MergeError`, every problem the method's
declarations in the registry reveal before any checkpoint is opened: unknown or misplaced
parameters, values of the wrong type or outside their declared range (gradient end points
and filtered values included: ``models[0].parameters.density: 1.5 is outside the allowed
range [0, 1]``), a missing required ``base_model``, too few or too many models, required
parameters set nowhere. :func:`~evomerge.merge.plan_merge` runs the same checks first.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

from evomerge.exceptions import MergeError
from evomerge.merge._models import canonical_path
from evomerge.merge.methods import BasePolicy, MergeMethod, ParamSpec, Scope, get_method
from evomerge.merge.recipe import Conditional, MergeRecipe, ParamSetting

__all__ = ["check_recipe", "recipe_inputs", "recipe_problems"]


class RecipeInput(NamedTuple):
    """One input of the merge as the recipe lists it (the base appended when not listed)."""

    model: str
    is_base: bool  # it is the recipe's base_model


def recipe_inputs(recipe: MergeRecipe) -> list[RecipeInput]:
    """The merge's inputs in mergekit's order: the models, then ``base_model`` if unlisted."""
    base = canonical_path(recipe.base_model) if recipe.base_model is not None else None
    inputs = [
        RecipeInput(m, base is not None and canonical_path(m) == base) for m in recipe.model_names()
    ]
    if recipe.base_model is not None and not any(i.is_base for i in inputs):
        inputs.append(RecipeInput(recipe.base_model, True))
    return inputs


def _scalars(setting: ParamSetting) -> Iterator[Any]:
    """Every value written in a setting: scalars, gradient entries, filtered values."""
    if isinstance(setting, Conditional):
        yield from _scalars(setting.value)
    elif isinstance(setting, list):
        for entry in setting:
            yield from _scalars(entry)
    else:
        yield setting


def _check_values(where: str, spec: ParamSpec, setting: ParamSetting, problems: list[str]) -> None:
    """Type and range of each written value (a gradient stays between its end points)."""
    for value in _scalars(setting):
        try:
            spec.validate(value)
        except ValueError as err:
            problems.append(f"{where}: {err}")


def _check_parameters(recipe: MergeRecipe, method: MergeMethod, problems: list[str]) -> None:
    valid = ", ".join(method.param_names)
    for key, setting in recipe.parameters.items():
        if key not in method.param_names:
            problems.append(
                f"parameters.{key}: unknown parameter for merge method {method.name!r}. Valid: {valid}"
            )
        else:
            _check_values(f"parameters.{key}", method.param(key), setting, problems)
    for k, entry in enumerate(recipe.models):
        for key, setting in entry.parameters.items():
            where = f"models[{k}].parameters.{key}"
            if key not in method.param_names:
                problems.append(
                    f"{where}: unknown parameter for merge method {method.name!r}. Valid: {valid}"
                )
            elif method.param(key).scope == Scope.GLOBAL:
                problems.append(
                    f"{where}: {key!r} applies to the whole merge; set it under the top-level 'parameters'"
                )
            else:
                _check_values(where, method.param(key), setting, problems)


def _count_problem(
    what: str, n: int, lo: int, hi: int | None, method: MergeMethod, inputs: list[RecipeInput]
) -> str | None:
    if n >= lo and (hi is None or n <= hi):
        return None
    if lo == hi:
        need = f"exactly {hi} {what}"
        if what == "model(s)" and method.base == BasePolicy.REQUIRED:
            need += f" (the base model and {hi - 1} other)"
    elif hi is not None and n > hi:
        need = f"at most {hi} {what}"
    else:
        need = f"at least {lo} {what}"
    names = ", ".join(repr(i.model) for i in inputs)
    return f"models: {method.name} merges {need}; got {n}: {names}"


def _check_structure(recipe: MergeRecipe, method: MergeMethod, problems: list[str]) -> None:
    if method.base == BasePolicy.REQUIRED and recipe.base_model is None:
        problems.append(
            f"base_model: merge method {method.name!r} needs a base_model (task vectors are taken against it)"
        )
    inputs = recipe_inputs(recipe)
    n = len(inputs)
    p = _count_problem("model(s)", n, method.min_inputs, method.max_inputs, method, inputs)
    if p is not None:
        if recipe.base_model is not None and method.base == BasePolicy.INPUT:
            p += "; base_model counts as an input when set (leave it out, or list only that model)"
        problems.append(p)
    if method.min_non_base is not None or method.max_non_base is not None:
        merge_base = recipe.base_model is not None and method.base != BasePolicy.INPUT
        others = [i for i in inputs if not (merge_base and i.is_base)]
        what = "model(s) besides the base_model" if merge_base else "model(s)"
        p = _count_problem(
            what, len(others), method.min_non_base or 0, method.max_non_base, method, others
        )
        if p is not None:
            problems.append(p)


def _check_required(recipe: MergeRecipe, method: MergeMethod, problems: list[str]) -> None:
    """Required parameters set nowhere at all (per-tensor gaps left by filters come later)."""
    inputs = recipe_inputs(recipe)
    for p in method.params:
        if not p.required or p.name in recipe.parameters:
            continue
        if p.scope == Scope.GLOBAL:
            problems.append(
                f"parameters.{p.name}: required by merge method {method.name!r}; set it"
            )
            continue
        for slot in inputs:
            if p.scope == Scope.NON_BASE and slot.is_base and method.base != BasePolicy.INPUT:
                continue
            entry = recipe.entry(slot.model)
            if entry is not None and p.name in entry.parameters:
                continue
            if entry is None:  # the base model, appended as an input
                problems.append(
                    f"base_model: {slot.model!r} is an input of {method.name!r} and needs {p.name!r}; set it in "
                    "the top-level parameters, or list the base model under 'models' with its own"
                )
            else:
                k = recipe.model_names().index(slot.model)
                problems.append(
                    f"models[{k}].parameters.{p.name}: required by merge method {method.name!r}; set it"
                )


def recipe_problems(recipe: MergeRecipe, method: MergeMethod) -> list[str]:
    """Every problem of ``recipe`` that ``method``'s declarations reveal (no model needed)."""
    problems: list[str] = []
    _check_structure(recipe, method, problems)
    _check_required(recipe, method, problems)
    _check_parameters(recipe, method, problems)
    return problems


def check_recipe(recipe: MergeRecipe, *, source: str | None = None) -> MergeMethod:
    """Check ``recipe`` against its merge method before any model is opened; returns it.

    Raises:
        UnknownMethodError: the merge method is not registered (lists the choices).
        MergeError: every other problem at once, each naming its field; prefixed with
            ``source`` (e.g. the YAML file) when given.
    """
    method = get_method(recipe.merge_method)
    problems = recipe_problems(recipe, method)
    if problems:
        where = f"{source}: " if source else ""
        raise MergeError(
            f"{where}recipe for merge method {recipe.merge_method!r}: {len(problems)} problem(s)\n"
            + "\n".join(f"  - {p}" for p in problems)
        )
    return method
