"""The search: the Optuna sampler, the Ray driver and workers, and trial evaluators.

::

    summary = run_search("run.yaml", run_dir="runs/demo")    # or resume the same run

One search session (:func:`run_search`) opens the run's study through
:mod:`evomerge.run`, starts :class:`TrialEvaluator` instances resident in Ray workers (one
per GPU or CPU slot), and dispatches trials to them. Evaluators are named in run.yaml's
``evaluator.factory`` (:data:`EVALUATORS`: ``pipeline``, the generate-and-judge one,
plug-ins, or ``module:callable``). Search spaces live in :mod:`evomerge.space`; reading a
finished or running search in :mod:`evomerge.run`; the post-search steps in
:mod:`evomerge.orchestrate`.
"""

from evomerge.search._build import (
    EVALUATORS,
    EvaluatorFactory,
    build_evaluator,
    get_evaluator_factory,
    register_evaluator,
)
from evomerge.search._cluster import WorkerPlan, plan_workers
from evomerge.search._pipeline import PipelineEvaluator
from evomerge.search._run import default_run_dir, run_search
from evomerge.search._sampler import distributions, make_sampler
from evomerge.search._types import (
    SearchSummary,
    StagedEvaluator,
    TrialEvaluator,
    TrialResult,
    is_staged,
)

__all__ = [
    "EVALUATORS",
    "EvaluatorFactory",
    "PipelineEvaluator",
    "SearchSummary",
    "StagedEvaluator",
    "TrialEvaluator",
    "TrialResult",
    "WorkerPlan",
    "build_evaluator",
    "default_run_dir",
    "distributions",
    "get_evaluator_factory",
    "is_staged",
    "make_sampler",
    "plan_workers",
    "register_evaluator",
    "run_search",
]
