"""Merge methods: pure tensor functions with mergekit 0.1.5's semantics, in one registry.

Built-in methods and their parameters (scope; default):

==================  =========================================================================
linear              weight (per input, base included; required), normalize (true)
task_arithmetic     weight (per model; required), normalize (false), lambda (1)
ties                + density (1), normalize (true), rescale (false)
dare_linear         + density, rescale (true), normalize (false)
dare_ties           + density, rescale (true), normalize (false), sign consensus
breadcrumbs         + density, gamma (0.01), rescale (false), normalize (false)
breadcrumbs_ties    as breadcrumbs, with sign consensus
della               + density, epsilon (0.15), normalize (true), rescale (true), consensus
della_linear        as della without consensus, normalize (false)
slerp               t (global; required); exactly the base and one model
passthrough         scale (optional); exactly one model
==================  =========================================================================

The task-arithmetic family also accepts ``int8_mask`` (no effect). See
:mod:`evomerge.merge.methods._spec` for the calling convention.
"""

from evomerge.merge.methods._aux import (
    CHUNK,
    SlerpStats,
    SourceAux,
    build_aux,
    magnitude_order,
    make_noise,
    noise_seed,
    row_rank,
    slerp_stats,
)
from evomerge.merge.methods._interp import linear, passthrough, slerp
from evomerge.merge.methods._registry import (
    ENTRY_POINT_GROUP,
    MERGE_METHODS,
    METHODS,
    get_method,
    list_methods,
    register_method,
)
from evomerge.merge.methods._spec import (
    REQUIRED,
    BasePolicy,
    MergeArgs,
    MergeFn,
    MergeMethod,
    Need,
    ParamSpec,
    Scope,
)
from evomerge.merge.methods._task_arithmetic import (
    breadcrumbs,
    breadcrumbs_ties,
    dare_linear,
    dare_ties,
    della,
    della_linear,
    generalized_task_arithmetic,
    task_arithmetic,
    ties,
)
from evomerge.merge.methods._workspace import Workspace

__all__ = [
    "CHUNK",
    "ENTRY_POINT_GROUP",
    "MERGE_METHODS",
    "METHODS",
    "REQUIRED",
    "BasePolicy",
    "MergeArgs",
    "MergeFn",
    "MergeMethod",
    "Need",
    "ParamSpec",
    "Scope",
    "SlerpStats",
    "SourceAux",
    "Workspace",
    "breadcrumbs",
    "breadcrumbs_ties",
    "build_aux",
    "dare_linear",
    "dare_ties",
    "della",
    "della_linear",
    "generalized_task_arithmetic",
    "get_method",
    "linear",
    "list_methods",
    "magnitude_order",
    "make_noise",
    "noise_seed",
    "passthrough",
    "register_method",
    "row_rank",
    "slerp",
    "slerp_stats",
    "task_arithmetic",
    "ties",
]
