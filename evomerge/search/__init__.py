"""The search: search spaces (genome <-> MergeRecipe), the Optuna study, the Ray driver.

::

    summary = run_search("run.yaml", run_dir="runs/demo")    # or resume the same run
    info = study_status("runs/demo"); print(format_status(info))

Pieces, in pipeline order: :class:`SpaceSpec` / :func:`load_space_spec` (a space as
written in YAML), :class:`SearchSpace` (bound to the models: ``decode(x) -> MergeRecipe``,
``encode(recipe) -> x``), the study helpers (storage, samplers, recovery), and the driver
that dispatches trials to :class:`TrialEvaluator` instances resident in Ray workers.
"""

from evomerge.search._build import build_evaluator, build_space, open_pool
from evomerge.search._cluster import WorkerPlan, plan_workers
from evomerge.search._methods import METHODS, MethodInfo
from evomerge.search._run import default_run_dir, run_search
from evomerge.search._space import Dimension, SearchSpace
from evomerge.search._space_spec import (
    Bounds,
    SpaceSpec,
    load_space_spec,
    shipped_space_names,
    shipped_spaces_dir,
)
from evomerge.search._status import format_status, load_run_study, study_status
from evomerge.search._study import (
    INTERRUPTED_ERROR,
    count_finished,
    make_sampler,
    make_storage,
    recover_interrupted,
)
from evomerge.search._types import SearchSummary, TrialEvaluator, TrialResult

__all__ = [
    "INTERRUPTED_ERROR",
    "METHODS",
    "Bounds",
    "Dimension",
    "MethodInfo",
    "SearchSpace",
    "SearchSummary",
    "SpaceSpec",
    "TrialEvaluator",
    "TrialResult",
    "WorkerPlan",
    "build_evaluator",
    "build_space",
    "count_finished",
    "default_run_dir",
    "format_status",
    "load_run_study",
    "load_space_spec",
    "make_sampler",
    "make_storage",
    "open_pool",
    "plan_workers",
    "recover_interrupted",
    "run_search",
    "shipped_space_names",
    "shipped_spaces_dir",
    "study_status",
]
