"""The default trial evaluator: merge in memory, generate answers, judge them.

Per trial: ``engine.materialize(recipe)`` -> ``generator.load_weights(...)`` ->
``generator.generate(prompts)`` -> judges -> objective value(s). The pool, merge engine,
generator, prompt items and judges are built once per worker and stay resident.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from evomerge.config import RunConfig
from evomerge.dtypes import to_torch
from evomerge.exceptions import ConfigError
from evomerge.generate import build_generator, build_prompt_items
from evomerge.judge import Sample, build_objective
from evomerge.merge import MergeEngine, MergeRecipe
from evomerge.run import build_space, open_pool
from evomerge.search._types import TrialResult

logger = logging.getLogger(__name__)

__all__ = ["PipelineEvaluator", "build_pipeline_evaluator"]

_SAMPLES_KEPT = 3


class PipelineEvaluator:
    """Generate-and-judge evaluation of merge recipes. One per worker, one call at a time."""

    def __init__(self, config: RunConfig, *, device: str, run_dir: Path | None = None) -> None:
        if config.generation is None or config.judging is None:
            raise ConfigError(
                "the generate-and-judge evaluator needs both 'generation' and 'judging' sections"
            )
        self.config = config
        merge_device = device if config.merge.device == "auto" else config.merge.device
        self.pool = open_pool(config)
        self.space = build_space(config, self.pool)
        self.engine = MergeEngine(
            self.pool,
            device=merge_device,
            dtype=to_torch(config.merge.dtype),
            seed=config.merge.seed,
            methods=[self.space.spec.method],
        )
        self.params = config.generation.params
        self.items = build_prompt_items(
            config.generation, tokenizer_path=self.pool.base_path, split="search"
        )
        self.generator = build_generator(
            config.generation,
            model_path=self.pool.base_path,
            device=device,
            trust_remote_code=config.models.trust_remote_code,
        )
        # the judge reply cache lives in the run dir when this node can see it
        cache_dir = run_dir if run_dir is not None and Path(run_dir).is_dir() else None
        self.objective = build_objective(config.judging, run_dir=cache_dir, base_dir=config.root)
        self.objective_names = list(self.objective.names)
        self.directions = list(self.objective.directions)

    def evaluate(self, trial_number: int, recipe: MergeRecipe) -> TrialResult:
        t0 = time.perf_counter()
        tensors = self.engine.materialize(recipe)
        t1 = time.perf_counter()
        self.generator.load_weights(tensors.items())
        answers = self.generator.generate([p.prompt for p in self.items], self.params)
        t2 = time.perf_counter()
        samples = [Sample.of(p, a) for p, a in zip(self.items, answers, strict=True)]
        result = self.objective.evaluate(samples, generator=self.generator)
        t3 = time.perf_counter()
        extra: dict[str, Any] = {}
        if result.errors:
            extra["judge_errors"] = list(result.errors)[:5]
        return TrialResult(
            trial_number=trial_number,
            values=[float(v) for v in result.values],
            scores={k: float(v) for k, v in result.judge_means.items()},
            samples=[{"question": s.question, "answer": s.answer} for s in samples[:_SAMPLES_KEPT]],
            timings={"merge_s": t1 - t0, "generate_s": t2 - t1, "judge_s": t3 - t2},
            extra=extra,
        )


def build_pipeline_evaluator(
    config: RunConfig, *, device: str, worker_index: int, run_dir: Path, **options: Any
) -> PipelineEvaluator:
    """The factory used when run.yaml has no ``evaluator:`` section (no options)."""
    if options:
        raise ConfigError(
            f"evaluator.options: the pipeline evaluator takes none, got {sorted(options)}"
        )
    return PipelineEvaluator(config, device=device, run_dir=run_dir)
