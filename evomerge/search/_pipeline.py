"""The default trial evaluator: merge in memory, generate answers, judge them.

Per trial: ``engine.materialize(recipe)`` -> ``generator.load_weights(...)`` ->
``generator.generate(prompts)`` -> judges -> objective value(s). The pool, merge engine,
generator, prompt items and judges are built once per worker and stay resident. When no
judge scores answers (only ``lm_eval``/``perplexity``-like judges, which score the model
itself), nothing is generated and no prompt set is needed. A ``type: dataflow`` space gets
:class:`~evomerge.search._dataflow_eval.DataflowEvaluator`, which re-wires a path model
instead of merging weights and shares :func:`generate_and_judge`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evomerge.config import RunConfig
from evomerge.dtypes import to_torch
from evomerge.exceptions import ConfigError, SearchError
from evomerge.generate import GenerationParams, PromptItem, build_generator, build_prompt_items
from evomerge.judge import (
    Objective,
    ObjectiveResult,
    Sample,
    Score,
    build_objective,
    needs_answers,
)
from evomerge.merge import MergeEngine, MergeRecipe
from evomerge.run import MERGE_CACHE_DIR, build_space, open_pool
from evomerge.run import attrs as A
from evomerge.search._prune import PruneGuide, fixed_order, pruned_value, should_stop
from evomerge.search._types import Genome, TrialEvaluator, TrialResult

logger = logging.getLogger(__name__)

__all__ = [
    "Generated",
    "PipelineEvaluator",
    "answer_items",
    "build_pipeline_evaluator",
    "generate_and_judge",
    "generate_answers",
    "judge_answers",
    "prune_order",
]

_SAMPLES_KEPT = 3


class PipelineEvaluator:
    """Generate-and-judge evaluation of merge recipes. One per worker. A
    :class:`StagedEvaluator`: ``generate_stage`` one call at a time, ``judge_stage`` of the
    previous trial may run beside it (``search.overlap_judging``)."""

    def __init__(self, config: RunConfig, *, device: str, run_dir: Path | None = None) -> None:
        if config.generation is None or config.judging is None:
            raise ConfigError(
                "the generate-and-judge evaluator needs both 'generation' and 'judging' sections"
            )
        self.config = config
        merge_device = device if config.merge.device == "auto" else config.merge.device
        self.pool = open_pool(config)
        self.space = build_space(config, self.pool)
        # the run dir, when this node can see it: the judge cache and the merge cache live there
        seen = Path(run_dir) if run_dir is not None and Path(run_dir).is_dir() else None
        self.engine = MergeEngine(
            self.pool,
            device=merge_device,
            dtype=to_torch(config.merge.dtype),
            seed=config.merge.seed,
            methods=[self.space.spec.method],
            # precomputations shared by the workers on this node and by resumed runs
            cache_dir=seen / MERGE_CACHE_DIR if seen is not None and config.merge.cache else None,
        )
        self.params = config.generation.params
        self.objective = build_objective(config.judging, run_dir=seen, base_dir=config.root)
        self.items = prune_order(
            config,
            self.objective,
            answer_items(config, self.objective, tokenizer_path=self.pool.base_path),
        )
        self.prompt_order = [it.id for it in self.items] if config.search.pruning.enabled else None
        self.generator = build_generator(
            config.generation,
            model_path=self.pool.base_path,
            device=device,
            trust_remote_code=config.models.trust_remote_code,
        )
        self.objective_names = list(self.objective.names)
        self.directions = list(self.objective.directions)

    def _load(self, recipe: Genome) -> float:
        """Merge ``recipe`` and load it into the generator; returns the merge time."""
        if not isinstance(recipe, MergeRecipe):
            raise SearchError("the weight-merge evaluator got a data-flow path; check the space")
        t0 = time.perf_counter()
        tensors = self.engine.materialize(recipe)
        t1 = time.perf_counter()
        self.generator.load_weights(tensors.items())
        return t1 - t0

    def generate_stage(self, trial_number: int, recipe: Genome) -> Generated:
        """Merge, load and generate (the accelerator's part); see :class:`StagedEvaluator`."""
        merge_s = self._load(recipe)
        return generate_answers(
            trial_number, self.generator, self.items, self.params, self.objective, merge_s=merge_s
        )

    def judge_stage(self, generated: Generated) -> TrialResult:
        """Judge what :meth:`generate_stage` produced (needs no accelerator)."""
        return judge_answers(generated, self.objective)

    def evaluate(
        self, trial_number: int, recipe: Genome, *, guide: PruneGuide | None = None
    ) -> TrialResult:
        """Both stages in a row; with ``guide`` (``search.pruning``) prompts are generated
        and judged in chunks and the trial may stop early (:func:`generate_and_judge`)."""
        if guide is None:
            return self.judge_stage(self.generate_stage(trial_number, recipe))
        merge_s = self._load(recipe)
        return generate_and_judge(
            trial_number,
            self.generator,
            self.items,
            self.params,
            self.objective,
            merge_s=merge_s,
            guide=guide,
        )


def answer_items(
    config: RunConfig, objective: Objective, *, tokenizer_path: Path
) -> list[PromptItem]:
    """The search prompts, rendered, when a judge scores answers; else none (nothing is
    generated). ConfigError when such a judge has no prompt set (the objective is closed)."""
    assert config.generation is not None
    answering = [n for n, j in objective.judges.items() if needs_answers(j)]
    if answering and config.generation.prompts is None:
        objective.close()
        raise ConfigError(
            f"generation.prompts: judge(s) {', '.join(answering)} score generated answers; "
            "give a prompt set (JSONL with question per line)"
        )
    if not answering:
        return []
    return build_prompt_items(config.generation, tokenizer_path=tokenizer_path, split="search")


@dataclass
class Generated:
    """One trial between its stages: the judged samples, the model judges' scores (taken
    while the candidate was loaded), timings and extras so far. Owned by that trial only."""

    trial_number: int
    samples: list[Sample]
    answered: bool  # False: no prompt items, the samples are one empty placeholder
    model_scores: dict[str, list[Score]]
    timings: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)


def generate_answers(
    trial_number: int,
    generator: Any,
    items: list[PromptItem],
    params: GenerationParams,
    objective: Objective,
    *,
    merge_s: float,
) -> Generated:
    """Generate an answer per prompt item with ``generator`` (its weights already set) and
    run the judges that score the model itself (``merge_s``: the time taken to set the
    weights). No items: nothing is generated, answer-free judges score the model itself."""
    t1 = time.perf_counter()
    answers = generator.generate([p.prompt for p in items], params) if items else []
    t2 = time.perf_counter()
    samples = [Sample.of(p, a) for p, a in zip(items, answers, strict=True)] or [
        Sample(question="", answer="")  # answer-free judges score the model itself
    ]
    model_scores = objective.score_on_model(samples, generator)
    timings = {"merge_s": merge_s, "generate_s": t2 - t1}
    if model_scores:
        timings["model_judge_s"] = time.perf_counter() - t2
    return Generated(
        trial_number=trial_number,
        samples=samples,
        answered=bool(items),
        model_scores=model_scores,
        timings=timings,
    )


def judge_answers(generated: Generated, objective: Objective) -> TrialResult:
    """Run the judges that score answers (no model needed) and return the trial's result."""
    t2 = time.perf_counter()
    result = objective.evaluate(generated.samples, model_scores=generated.model_scores)
    timings = {**generated.timings, "judge_s": time.perf_counter() - t2}
    samples = generated.samples if generated.answered else []
    return _result(generated.trial_number, result, samples, timings, extra=generated.extra)


def prune_order(
    config: RunConfig, objective: Objective, items: list[PromptItem]
) -> list[PromptItem]:
    """``items`` in the run's fixed shuffled order when ``search.pruning`` is on (else as
    given). ConfigError (the objective is closed) when a judge built here scores the model
    as a whole (a plug-in the config check could not see), or no prompt is scored."""
    if not config.search.pruning.enabled:
        return items
    whole = [n for n, j in objective.judges.items() if not needs_answers(j)]
    if whole or not items:
        objective.close()
        raise ConfigError(
            f"search.pruning: judge(s) {', '.join(whole) or 'of this run'} do not score "
            "each prompt's answer; set search.pruning: false"
        )
    return fixed_order(items, config.search.seed)


def generate_and_judge(
    trial_number: int,
    generator: Any,
    items: list[PromptItem],
    params: GenerationParams,
    objective: Objective,
    *,
    merge_s: float,
    guide: PruneGuide | None = None,
) -> TrialResult:
    """Generate an answer per prompt item with ``generator`` (its weights already set),
    judge them, and return the trial's result (``merge_s``: the time taken to set the
    weights): :func:`generate_answers`, then :func:`judge_answers`.

    With ``guide`` (``search.pruning``; ``items`` in the run's fixed order) the items are
    generated and judged ``guide.chunk_size`` at a time and the trial stops early, as
    ``pruned`` with the scores of the prompts it used, once :func:`should_stop` says so;
    ``prompt_scores`` holds each used prompt's score (:meth:`Objective.per_sample`)."""
    if guide is not None and items:
        return _chunked(trial_number, generator, items, params, objective, merge_s, guide)
    generated = generate_answers(trial_number, generator, items, params, objective, merge_s=merge_s)
    return judge_answers(generated, objective)


def _result(
    trial_number: int,
    result: ObjectiveResult,
    samples: list[Sample],
    timings: dict[str, float],
    *,
    extra: dict[str, Any] | None = None,
) -> TrialResult:
    out_extra: dict[str, Any] = dict(extra or {})
    if result.errors:
        out_extra["judge_errors"] = list(result.errors)[:5]
    return TrialResult(
        trial_number=trial_number,
        values=[float(v) for v in result.values],
        scores={k: float(v) for k, v in result.judge_means.items()},
        samples=[{"question": s.question, "answer": s.answer} for s in samples[:_SAMPLES_KEPT]],
        timings=timings,
        extra=out_extra,
    )


def _chunked(
    trial_number: int,
    generator: Any,
    items: list[PromptItem],
    params: GenerationParams,
    objective: Objective,
    merge_s: float,
    guide: PruneGuide,
) -> TrialResult:
    gen_s = judge_s = 0.0
    samples: list[Sample] = []
    scores: dict[str, list[Score]] = {}
    per_prompt: list[float] = []
    stop, p = False, 1.0
    for start in range(0, len(items), guide.chunk_size):
        chunk = items[start : start + guide.chunk_size]
        t1 = time.perf_counter()
        answers = generator.generate([it.prompt for it in chunk], params)
        t2 = time.perf_counter()
        part = [Sample.of(it, a) for it, a in zip(chunk, answers, strict=True)]
        chunk_scores = objective.score(part, generator=generator)
        judge_s += time.perf_counter() - t2
        gen_s += t2 - t1
        samples.extend(part)
        for name, ss in chunk_scores.items():
            scores.setdefault(name, []).extend(ss)
        per_prompt.extend(objective.per_sample(chunk_scores))
        stop, p = should_stop(per_prompt, guide)
        if stop and len(samples) < len(items):
            break
    pruned = stop and len(samples) < len(items)
    t3 = time.perf_counter()
    combined = objective.combine(scores, partial=pruned)
    judge_s += time.perf_counter() - t3
    timings = {"merge_s": merge_s, "generate_s": gen_s, "judge_s": judge_s}
    out = _result(trial_number, combined, samples, timings)
    out.prompt_scores = [v if math.isfinite(v) else None for v in per_prompt]
    out.extra["prune_p"] = p
    by_judge = {
        name: [s.value if s.ok and math.isfinite(s.value) else None for s in ss]
        for name, ss in scores.items()
    }
    out.extra[A.PROMPT_JUDGE_SCORES] = by_judge
    if pruned:
        out.pruned = True
        out.prompt_ids = [it.id for it in items[: len(samples)]]
        out.extra[A.PARTIAL_VALUES] = [v if math.isfinite(v) else None for v in out.values or []]
        out.extra[A.PRUNED_VALUE] = pruned_value(by_judge, objective.objectives[0].terms, guide)
        out.values = None
    return out


def build_pipeline_evaluator(
    config: RunConfig, *, device: str, worker_index: int, run_dir: Path, **options: Any
) -> TrialEvaluator:
    """The factory used when run.yaml has no ``evaluator:`` section (no options): the
    weight-merge pipeline, or the data-flow one for a ``type: dataflow`` space."""
    if options:
        raise ConfigError(
            f"evaluator.options: the pipeline evaluator takes none, got {sorted(options)}"
        )
    from evomerge.space import DataflowSpec

    if isinstance(config.space_spec(), DataflowSpec):
        from evomerge.search._dataflow_eval import DataflowEvaluator

        return DataflowEvaluator(config, device=device, run_dir=run_dir)
    return PipelineEvaluator(config, device=device, run_dir=run_dir)
