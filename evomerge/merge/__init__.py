"""Merging: recipes (mergekit's format), merge methods, the streaming merge and the engine.

- :class:`MergeRecipe`: one merge, as a mergekit ``models:`` YAML.
- :mod:`evomerge.merge.methods`: the methods (pure tensor functions) and their registry.
- :func:`iter_merged_tensors`: merge a recipe tensor by tensor from disk (``evomerge merge``,
  export); :func:`pool_for_recipe` opens the models a recipe names.
- :class:`MergeEngine`: base and task vectors resident on a device; ``materialize(recipe)``
  merges in memory, for search trials.
- :func:`check_recipe`: a recipe against its method's declarations, before any model is opened.
- :func:`plan_merge` / :func:`resolve_tensor`: validation and per-tensor parameter resolution.
"""

from evomerge.merge._engine import MergeEngine
from evomerge.merge._models import pool_for_recipe
from evomerge.merge._resolve import (
    MergePlan,
    Slot,
    TensorPlan,
    parse_dtype,
    plan_merge,
    resolve_tensor,
)
from evomerge.merge._stream import iter_merged_tensors
from evomerge.merge._validate import check_recipe
from evomerge.merge.methods import (
    MERGE_METHODS,
    METHODS,
    MergeArgs,
    MergeMethod,
    ParamSpec,
    Scope,
    get_method,
    list_methods,
    register_method,
)
from evomerge.merge.recipe import (
    Conditional,
    MergeRecipe,
    ModelEntry,
    evaluate_setting,
    gradient_position,
)

__all__ = [
    "MERGE_METHODS",
    "METHODS",
    "Conditional",
    "MergeArgs",
    "MergeEngine",
    "MergeMethod",
    "MergePlan",
    "MergeRecipe",
    "ModelEntry",
    "ParamSpec",
    "Scope",
    "Slot",
    "TensorPlan",
    "check_recipe",
    "evaluate_setting",
    "get_method",
    "gradient_position",
    "iter_merged_tensors",
    "list_methods",
    "parse_dtype",
    "plan_merge",
    "pool_for_recipe",
    "register_method",
    "resolve_tensor",
]
