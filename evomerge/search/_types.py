"""The contract between the driver and its workers: TrialEvaluator and TrialResult."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from evomerge.merge.path import LayerPath
from evomerge.merge.recipe import MergeRecipe

__all__ = [
    "Genome",
    "SearchSummary",
    "StagedEvaluator",
    "TrialEvaluator",
    "TrialResult",
    "genome_from_data",
    "is_staged",
]

#: What a trial evaluates: a weight merge (a recipe) or a data-flow path.
Genome = MergeRecipe | LayerPath


def genome_from_data(data: Any, *, source: str) -> Genome:
    """A trial's decoded genome from its plain data (a path's ``to_dict`` or a recipe's
    mergekit dict); ConfigError naming ``source`` when it is neither."""
    if LayerPath.is_path_data(data):
        return LayerPath.from_dict(data, source=source)
    return MergeRecipe.from_mergekit_dict(data, source=source)


@dataclass
class TrialResult:
    """What one evaluation produced. Crosses the Ray wire, so it holds only plain data.

    ``values`` has one entry per objective when the evaluation succeeded; ``error`` is set
    (and ``values`` None) when it failed, with ``infrastructure`` True when the cause was
    outside the candidate (:func:`evomerge.exceptions.is_infrastructure`: a judge endpoint
    down, a dead generator). ``scores`` are per-judge means, ``samples`` a few
    ``{"question", "answer"}`` dicts, ``timings`` seconds per stage.

    With ``search.pruning``: ``prompt_scores`` holds each prompt's score in the run's fixed
    order (None where unscored), as far as the trial got; ``pruned`` is True when it was
    stopped early (then ``values`` is None, ``prompt_ids`` names the prompts it used and
    ``scores`` are the judges' means over them).
    """

    trial_number: int
    values: list[float] | None = None
    scores: dict[str, float] = field(default_factory=dict)
    samples: list[dict[str, str]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    worker: str = ""
    node_id: str = ""
    error: str | None = None
    traceback: str | None = None
    infrastructure: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    prompt_scores: list[float | None] | None = None
    pruned: bool = False
    prompt_ids: list[str] | None = None

    @property
    def ok(self) -> bool:
        """A complete evaluation (not failed, not pruned)."""
        return (
            self.error is None
            and not self.pruned
            and self.values is not None
            and all(math.isfinite(v) for v in self.values)
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class TrialEvaluator(Protocol):
    """Scores merge recipes (or data-flow paths); one instance lives in each worker for the
    whole run.

    Built once per worker by a factory ``factory(config, *, device, worker_index, run_dir,
    **options)`` named in run.yaml's ``evaluator.factory`` (a name registered in
    :data:`evomerge.search.EVALUATORS` or ``module:callable``; default ``pipeline``, the
    generate-and-judge evaluator); heavy state such as the model pool, merge engine, generator and judges
    stays resident.
    ``evaluate`` is called from one thread at a time, with genomes in any order (recipes,
    or :class:`~evomerge.merge.LayerPath` for a ``dataflow`` space); it may
    raise any exception, which fails that trial (the worker wraps it into a TrialResult
    with the message and a traceback summary). ``objective_names`` and ``directions``
    ("maximize" or "minimize", one per objective) are fixed for the evaluator's lifetime.
    """

    objective_names: list[str]
    directions: list[str]

    def evaluate(self, trial_number: int, recipe: Genome) -> TrialResult: ...

    # An evaluator that can stop hopeless trials (``search.pruning``) also accepts a
    # keyword ``guide`` (:class:`evomerge.search._prune.PruneGuide`) and has a
    # ``prompt_order`` attribute (the prompt ids in its fixed order); the pipeline and
    # data-flow evaluators do.


@runtime_checkable
class StagedEvaluator(TrialEvaluator, Protocol):
    """A :class:`TrialEvaluator` whose evaluation splits in two, so that a worker can judge
    one trial while it generates the next (``search.overlap_judging``).

    ``generate_stage(trial_number, genome)`` does the accelerator's work (merge, generate,
    judges that score the model itself) and returns an opaque value holding everything
    the trial needs afterwards; it is called from one thread at a time. ``judge_stage(that
    value)`` finishes the trial without the accelerator and may run in another thread at
    the same time as the next ``generate_stage``: it must read only its argument and
    thread-safe state (never "the last trial" kept on the evaluator). Either may raise,
    which fails that trial. ``evaluate`` must give the same result as the two in a row.
    """

    def generate_stage(self, trial_number: int, recipe: Genome) -> Any: ...

    def judge_stage(self, generated: Any) -> TrialResult: ...


def is_staged(evaluator: object) -> bool:
    """Whether ``evaluator`` has both stages of :class:`StagedEvaluator`."""
    return callable(getattr(evaluator, "generate_stage", None)) and callable(
        getattr(evaluator, "judge_stage", None)
    )


@dataclass
class SearchSummary:
    """What :func:`evomerge.search.run_search` returns."""

    run_dir: Path
    n_complete: int
    n_failed: int
    n_target: int
    directions: list[str]
    best_trial: int | None  # the run layer's best (StudyView.best), None before any completes
    best_values: list[float] | None
    stopped: str  # "done", "interrupted", "workers_lost", "infrastructure"
    elapsed_s: float
    trials_per_hour: float
    driver_overhead_s: (
        float  # mean driver-side seconds per finished trial (ask + tell + bookkeeping)
    )
    extra: dict[str, Any] = field(default_factory=dict)
    n_pruned: int = 0  # stopped early (search.pruning); they count toward n_target
