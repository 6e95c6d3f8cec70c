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
sce                 select_topk (global, 1); task vectors weighed by energy, sign consensus
model_stock         filter_wise (false); the base and at least two models
nuslerp             weight (per model; required), nuslerp_row_wise (false), nuslerp_flatten
                    (true); two models, base_model optional (then task vectors)
multislerp          weight (per model; required), normalize_weights (true), eps (1e-8);
                    base_model optional (then task vectors)
karcher             max_iter (10), tol (1e-5); the base model, when set, is one more input
nearswap            t (global; required); exactly the base and one model
arcee_fusion        (no parameters); exactly the base and one model
ram                 epsilon (global, 1e-5)
ramplus_tl          r (0.1), alpha (0.2), epsilon (1e-5)
==================  =========================================================================

Ranges (``density`` in [0, 1], ...) are declared once, on each :class:`ParamSpec`, and
checked wherever a value is written: recipes, gradients, search-space bounds.

The task-arithmetic family also accepts ``int8_mask`` (no effect). See
:mod:`evomerge.merge.methods._spec` for the calling convention.
"""

from evomerge.merge.methods._aux import (
    CHUNK,
    SlerpStats,
    SourceAux,
    build_aux,
    make_noise,
    map_sources,
    noise_seed,
    row_rank,
    slerp_stats,
)
from evomerge.merge.methods._interp import linear, passthrough, slerp
from evomerge.merge.methods._pair import arcee_fusion, nearswap
from evomerge.merge.methods._registry import (
    ENTRY_POINT_GROUP,
    MERGE_METHODS,
    METHODS,
    get_method,
    list_methods,
    register_method,
)
from evomerge.merge.methods._select import ram, ramplus_tl, sce
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
from evomerge.merge.methods._sphere import karcher, model_stock, multislerp, nuslerp
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
    "arcee_fusion",
    "breadcrumbs",
    "breadcrumbs_ties",
    "build_aux",
    "dare_linear",
    "dare_ties",
    "della",
    "della_linear",
    "generalized_task_arithmetic",
    "get_method",
    "karcher",
    "linear",
    "list_methods",
    "make_noise",
    "map_sources",
    "model_stock",
    "multislerp",
    "nearswap",
    "noise_seed",
    "nuslerp",
    "passthrough",
    "ram",
    "ramplus_tl",
    "register_method",
    "row_rank",
    "sce",
    "slerp",
    "slerp_stats",
    "task_arithmetic",
    "ties",
]
