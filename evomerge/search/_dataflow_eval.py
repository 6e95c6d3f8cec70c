"""The data-flow trial evaluator: re-wire a path model per trial, generate, judge.

Built once per worker for a ``type: dataflow`` space: the sources are resolved as the
driver resolved them (:func:`evomerge.run.build_run_space`), every source's layers are
loaded once into a :class:`~evomerge.generate.PathModel` on the worker's device, and the
``hf`` generator wraps that model. Per trial: ``set_path(path)`` (no weight copied; a
layer that repeats is one module) -> generate -> judge. vLLM is refused by the config:
an engine cannot change its layer count while it runs.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from evomerge._yaml import validate_model
from evomerge.config import RunConfig
from evomerge.exceptions import ConfigError, SearchError
from evomerge.generate import HFGenerator, HFOptions, PathModel, resolve_dtype
from evomerge.judge import build_objective
from evomerge.merge import LayerPath, open_path_sources
from evomerge.run import build_run_space
from evomerge.search._pipeline import (
    Generated,
    answer_items,
    generate_and_judge,
    generate_answers,
    judge_answers,
    prune_order,
)
from evomerge.search._prune import PruneGuide
from evomerge.search._types import Genome, TrialResult
from evomerge.space import DataflowSpace

logger = logging.getLogger(__name__)

__all__ = ["DataflowEvaluator"]


class DataflowEvaluator:
    """Generate-and-judge evaluation of data-flow paths. One per worker; staged like
    :class:`~evomerge.search._pipeline.PipelineEvaluator`."""

    def __init__(self, config: RunConfig, *, device: str, run_dir: Path | None = None) -> None:
        import torch
        from transformers import AutoTokenizer

        gen = config.generation
        if gen is None or config.judging is None:
            raise ConfigError(
                "the generate-and-judge evaluator needs both 'generation' and 'judging' sections"
            )
        space = build_run_space(config)
        if not isinstance(space, DataflowSpace):
            raise ConfigError("space: the data-flow evaluator needs a 'type: dataflow' space")
        self.config = config
        self.space = space
        opts = validate_model(HFOptions, gen.backend_options, source="generation.backend_options")
        weights = open_path_sources(space.sources, allow_pickle=config.models.allow_pickle)
        dev = torch.device(device)
        self.model = PathModel.build(
            weights,
            embedding=space.embedding,
            device=dev,
            dtype=resolve_dtype(gen.dtype, dev),
            attn_implementation=opts.attn_implementation,
        )
        tok_dir = weights[space.embedding].base_dir
        tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
        self.generator = HFGenerator(model=self.model.model, tokenizer=tokenizer, options=opts)
        self.params = gen.params
        cache_dir = run_dir if run_dir is not None and Path(run_dir).is_dir() else None
        self.objective = build_objective(config.judging, run_dir=cache_dir, base_dir=config.root)
        self.items = prune_order(
            config, self.objective, answer_items(config, self.objective, tokenizer_path=tok_dir)
        )
        self.prompt_order = [it.id for it in self.items] if config.search.pruning.enabled else None
        self.objective_names = list(self.objective.names)
        self.directions = list(self.objective.directions)

    def _set_path(self, trial_number: int, recipe: Genome) -> tuple[LayerPath, float]:
        """Re-wire the path model to ``recipe``; returns it and the time taken."""
        if not isinstance(recipe, LayerPath):
            raise SearchError("the data-flow evaluator got a merge recipe; check the space")
        if recipe.sources != self.space.sources:
            raise SearchError(
                f"trial {trial_number}: the path's sources differ from the ones this worker "
                "loaded; a run's sources are fixed when it starts"
            )
        t0 = time.perf_counter()
        self.model.set_path(recipe)
        return recipe, time.perf_counter() - t0

    def generate_stage(self, trial_number: int, recipe: Genome) -> Generated:
        """Re-wire the path model and generate (the accelerator's part)."""
        path, merge_s = self._set_path(trial_number, recipe)
        generated = generate_answers(
            trial_number, self.generator, self.items, self.params, self.objective, merge_s=merge_s
        )
        generated.extra["path_length"] = len(path)
        return generated

    def judge_stage(self, generated: Generated) -> TrialResult:
        """Judge what :meth:`generate_stage` produced (needs no accelerator)."""
        return judge_answers(generated, self.objective)

    def evaluate(
        self, trial_number: int, recipe: Genome, *, guide: PruneGuide | None = None
    ) -> TrialResult:
        """Both stages in a row; with ``guide`` (``search.pruning``) chunked, may stop early."""
        if guide is None:
            return self.judge_stage(self.generate_stage(trial_number, recipe))
        path, merge_s = self._set_path(trial_number, recipe)
        result = generate_and_judge(
            trial_number,
            self.generator,
            self.items,
            self.params,
            self.objective,
            merge_s=merge_s,
            guide=guide,
        )
        result.extra["path_length"] = len(path)
        return result
