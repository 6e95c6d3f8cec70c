"""What the demo's search is measured against: the sources, its start point, uniform merges.

Every baseline is a task-arithmetic recipe scored in this process by the search's own
evaluator (:class:`~evomerge.search._pipeline.PipelineEvaluator`: same merge engine,
generator, prompts and judges), on the search prompts or on the held-out prompts:

- a source: weight 1 on it and 0 on the others (base + its task vector);
- the start point: the genome the search starts from (every weight at the middle of its
  bounds), decoded by the run's own search space;
- the uniform grid: one weight per source, the same in every layer, each taken from a
  grid over the space's weight bounds; the best of it on the search prompts is "the best
  uniform merge" (what a user gets from a small grid search without per-layer values).

Single-threaded use only (an evaluator sets its model's weights per call).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from evomerge.exceptions import ConfigError, SearchError

logger = logging.getLogger(__name__)

__all__ = [
    "Scored",
    "SplitScorer",
    "UniformResult",
    "best_uniform",
    "grid_values",
    "source_recipe",
    "start_recipe",
    "uniform_recipe",
]


@dataclass(frozen=True)
class Scored:
    """One recipe's objective value(s), per-judge means and a few sample answers."""

    values: list[float]
    scores: dict[str, float]
    samples: list[dict[str, str]]

    @property
    def value(self) -> float:
        return self.values[0]


class SplitScorer:
    """Scores recipes on one prompt split (``search`` or ``heldout``) of a run's config.

    Each call runs with ``threads`` torch CPU threads (default 1, as the search's CPU
    workers: tiny models gain nothing from more, and a busy machine loses); None leaves
    them alone (vLLM's in-process CPU engine sets its own and refuses changes).
    :meth:`close` releases the generator (a vLLM engine) at a known point.
    """

    def __init__(
        self, config: Any, split: Literal["search", "heldout"], *, threads: int | None = 1
    ) -> None:
        from evomerge.search import PipelineEvaluator

        gen = config.generation
        if split == "heldout":
            if gen.heldout_prompts is None:
                raise ConfigError("generation.heldout_prompts: the demo needs held-out prompts")
            gen = gen.model_copy(update={"prompts": gen.heldout_prompts})
        self.split = split
        self.threads = threads
        self.evaluator = PipelineEvaluator(
            config.model_copy(update={"generation": gen}), device="cpu"
        )

    def __call__(self, name: str, recipe: Any) -> Scored:
        import torch

        old = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            r = self.evaluator.evaluate(-1, recipe)
        finally:
            if self.threads is not None:
                torch.set_num_threads(old)
        if not r.ok or r.values is None:
            raise SearchError(f"demo: evaluating {name} on {self.split} prompts failed: {r.error}")
        return Scored(values=list(r.values), scores=dict(r.scores), samples=list(r.samples))

    def close(self) -> None:
        """Release the generator when it can be closed (idempotent)."""
        close = getattr(self.evaluator.generator, "close", None)
        if callable(close):
            close()


def uniform_recipe(pool: Any, base: str, weights: Mapping[str, float]) -> Any:
    """Task arithmetic with one weight per source (missing sources get 0), in every layer."""
    from evomerge.merge.recipe import MergeRecipe, ModelEntry

    unknown = sorted(set(weights) - set(pool.source_names))
    if unknown:
        raise ConfigError(
            f"weights: unknown source(s) {', '.join(unknown)}; sources: {', '.join(pool.source_names)}"
        )
    entries = tuple(
        ModelEntry(model=pool.model_ref(i), parameters={"weight": float(weights.get(name, 0.0))})
        for i, name in enumerate(pool.source_names)
    )
    return MergeRecipe(merge_method="task_arithmetic", base_model=base, models=entries)


def source_recipe(pool: Any, base: str, which: str) -> Any:
    """Exactly source ``which``: weight 1 on it, 0 on the others."""
    return uniform_recipe(pool, base, {which: 1.0})


def start_recipe(config: Any, pool: Any) -> Any:
    """The recipe of the search's start point, decoded by the run's search space."""
    from evomerge.run import build_space

    space = build_space(config, pool)
    return space.decode(space.x0())


def grid_values(low: float, high: float, step: float) -> list[float]:
    """``low, low + step, ...`` up to ``high`` (included when on the grid), rounded to 1e-9."""
    if step <= 0:
        raise ConfigError(f"grid step must be > 0, got {step}")
    n = int((high - low) / step + 1e-9)
    return [round(low + i * step, 9) for i in range(n + 1)]


@dataclass(frozen=True)
class UniformResult:
    """The grid's best point on the search prompts, and every point's value."""

    weights: dict[str, float]
    scored: Scored
    grid: list[dict[str, Any]]  # [{"weights": {source: w}, "value": v}, ...] in grid order


def best_uniform(
    score: SplitScorer,
    pool: Any,
    base: str,
    values: Sequence[float],
    *,
    progress: bool = False,
) -> UniformResult:
    """Score every point of ``values`` ^ n_sources on ``score``'s split; the best (first on ties)."""
    from tqdm.auto import tqdm

    names = list(pool.source_names)
    points = list(itertools.product(values, repeat=len(names)))
    best: tuple[float, dict[str, float], Scored] | None = None
    grid = []
    for point in tqdm(points, desc="uniform grid", disable=not progress, leave=False):
        weights = dict(zip(names, point, strict=True))
        scored = score(f"uniform {weights}", uniform_recipe(pool, base, weights))
        grid.append({"weights": weights, "value": scored.value})
        if best is None or scored.value > best[0]:
            best = (scored.value, weights, scored)
    if best is None:
        raise ConfigError("uniform grid: no grid values")
    logger.info("best uniform merge on %s prompts: %s -> %.4f", score.split, best[1], best[0])
    return UniformResult(weights=best[1], scored=best[2], grid=grid)
