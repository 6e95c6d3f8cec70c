"""Merging: recipes (mergekit's format), merge methods, the streaming merge and the engine.

- :class:`MergeRecipe`: one merge, as a mergekit ``models:`` YAML.
- :class:`LayerPath`: a data-flow merge, a path through the sources' layers;
  :func:`open_path_sources` reads its sources' weights and :func:`check_layers` checks that
  their layers share one residual stream.
- :mod:`evomerge.merge.methods`: the methods (pure tensor functions) and their registry.
- :func:`iter_merged_tensors`: merge a recipe tensor by tensor from disk (``evomerge merge``,
  export); :func:`pool_for_recipe` opens the models a recipe names.
- :class:`MergeEngine`: base and task vectors resident on a device; ``materialize(recipe)``
  merges in memory, for search trials; :class:`PrecomputeCache` keeps its precomputations
  on disk, keyed by content, for other workers and resumed runs.
- :func:`check_recipe`: a recipe against its method's declarations, before any model is opened.
- :func:`plan_merge` / :func:`resolve_tensor`: validation and per-tensor parameter resolution.
"""

from evomerge.merge._cache import PrecomputeCache
from evomerge.merge._engine import MergeEngine
from evomerge.merge._models import pool_for_recipe
from evomerge.merge._path_io import (
    FOLD_SUFFIXES,
    SUPPORTED_PATH_MODEL_TYPES,
    SourceWeights,
    check_layers,
    hf_config,
    layer_name,
    layer_problems,
    layer_types,
    open_path_source,
    open_path_sources,
    split_layer_name,
)
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
from evomerge.merge.path import LayerPath, PathSlot, PathSource
from evomerge.merge.recipe import (
    Conditional,
    MergeRecipe,
    ModelEntry,
    evaluate_setting,
    gradient_position,
)

__all__ = [
    "FOLD_SUFFIXES",
    "MERGE_METHODS",
    "METHODS",
    "SUPPORTED_PATH_MODEL_TYPES",
    "Conditional",
    "LayerPath",
    "MergeArgs",
    "MergeEngine",
    "MergeMethod",
    "MergePlan",
    "MergeRecipe",
    "ModelEntry",
    "ParamSpec",
    "PathSlot",
    "PathSource",
    "PrecomputeCache",
    "Scope",
    "Slot",
    "SourceWeights",
    "TensorPlan",
    "check_layers",
    "check_recipe",
    "evaluate_setting",
    "get_method",
    "gradient_position",
    "hf_config",
    "iter_merged_tensors",
    "layer_name",
    "layer_problems",
    "layer_types",
    "list_methods",
    "open_path_source",
    "open_path_sources",
    "parse_dtype",
    "plan_merge",
    "pool_for_recipe",
    "register_method",
    "resolve_tensor",
    "split_layer_name",
]
