"""Fake and deterministic trial evaluators for tests, benchmarks and demos.

Plug one into a run with ``evaluator: {factory: "evomerge.testing.search:<factory>",
options: {...}}`` in run.yaml. Options shared by every evaluator here (fault injection)::

    fail_trials: [3]         raise in these trial numbers (every attempt)
    fail_message: "boom"     the message raised
    unreachable_trials: [4]  raise ConnectionRefusedError in these trials (every attempt): an
                             infrastructure failure, as from a plug-in judge whose server is down
    crash_once_trials: [5]   kill the worker process (os._exit) the first time these run
    sleep_s: 0.1             seconds to sleep per evaluation (simulated work)
    slow_trials: {1: 3.0}    seconds to sleep in these trials instead

- :func:`quadratic_evaluator`: ``-mean(((x - x*) / range)^2)`` of the recipe's genome ``x``
  (``space.encode``) around a hidden optimum ``x*`` (value 0 at the optimum); with
  ``n_objectives: 2`` a second optimum gives a trade-off (a Pareto front).
- :func:`staged_quadratic_evaluator`: the same value in two stages (``generate_stage``,
  ``judge_stage``) for ``search.overlap_judging``; options ``judge_sleep_s`` (a simulated
  remote judge) and ``judge_fail_trials`` (raise in the judge stage).
- :func:`weight_distance_evaluator`: the real merge path: the recipe is materialized by
  :class:`evomerge.merge.MergeEngine`, and the value is minus the distance of the merged
  weights to a hidden target merge, relative to the start point's (start: -1, optimum: 0).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evomerge.config import RunConfig
from evomerge.dtypes import to_torch
from evomerge.merge import MergeEngine, MergeRecipe
from evomerge.run import build_space, open_pool
from evomerge.search import TrialResult
from evomerge.space import SearchSpace

logger = logging.getLogger(__name__)

__all__ = [
    "FaultInjector",
    "QuadraticEvaluator",
    "StagedQuadraticEvaluator",
    "WeightDistanceEvaluator",
    "hidden_optimum",
    "quadratic_evaluator",
    "staged_quadratic_evaluator",
    "weight_distance_evaluator",
]


def hidden_optimum(space: SearchSpace, seed: int) -> np.ndarray:
    """A deterministic point inside the space's bounds, away from the edges and the middle."""
    rng = np.random.default_rng(seed)
    lo, hi = space.lower, space.upper
    return lo + (hi - lo) * rng.uniform(0.15, 0.85, size=space.dim)


class FaultInjector:
    """Raises, crashes or sleeps on the configured trial numbers (see the module docstring)."""

    def __init__(
        self,
        *,
        fail_trials: Sequence[int] = (),
        fail_message: str = "injected failure",
        unreachable_trials: Sequence[int] = (),
        crash_once_trials: Sequence[int] = (),
        sleep_s: float = 0.0,
        slow_trials: dict[int, float] | None = None,
        marker_dir: Path | None = None,
    ) -> None:
        self.fail_trials = set(fail_trials)
        self.fail_message = fail_message
        self.unreachable_trials = set(unreachable_trials)
        self.crash_once_trials = set(crash_once_trials)
        self.sleep_s = sleep_s
        self.slow_trials = {int(k): float(v) for k, v in (slow_trials or {}).items()}
        self.marker_dir = marker_dir

    def before(self, trial_number: int) -> None:
        if trial_number in self.crash_once_trials and self.marker_dir is not None:
            mark = self.marker_dir / "fault_marks" / f"crashed_{trial_number}"
            if not mark.exists():
                mark.parent.mkdir(parents=True, exist_ok=True)
                mark.touch()
                logger.warning("crashing this worker on trial %d (fault injection)", trial_number)
                os._exit(3)
        delay = self.slow_trials.get(trial_number, self.sleep_s)
        if delay > 0:
            time.sleep(delay)
        if trial_number in self.fail_trials:
            raise RuntimeError(f"{self.fail_message} (trial {trial_number})")
        if trial_number in self.unreachable_trials:
            raise ConnectionRefusedError(
                f"injected: the scoring server refused the connection (trial {trial_number})"
            )


class QuadraticEvaluator:
    """A deterministic function of the recipe's genome; needs no merge. Thread-safe."""

    def __init__(
        self,
        space: SearchSpace,
        *,
        target: Sequence[float] | None = None,
        seed: int = 1234,
        n_objectives: int = 1,
        faults: FaultInjector | None = None,
    ) -> None:
        if n_objectives not in (1, 2):
            raise ValueError(f"n_objectives must be 1 or 2, got {n_objectives}")
        self.space = space
        self.target = (
            np.asarray(target, dtype=float) if target is not None else hidden_optimum(space, seed)
        )
        if self.target.shape != (space.dim,):
            raise ValueError(
                f"target has {self.target.shape[0]} values; the space has {space.dim} dimensions"
            )
        self.second = hidden_optimum(space, seed + 1)
        self.objective_names = ["score"] if n_objectives == 1 else ["score", "other"]
        self.directions = ["maximize"] * n_objectives
        self.faults = faults or FaultInjector()
        self._range = space.upper - space.lower

    def value(self, x: np.ndarray, target: np.ndarray) -> float:
        return -float(np.mean(((x - target) / self._range) ** 2))

    def evaluate(self, trial_number: int, recipe: MergeRecipe) -> TrialResult:
        self.faults.before(trial_number)
        t0 = time.perf_counter()
        x = self.space.encode(recipe)
        values = [self.value(x, self.target)]
        if len(self.directions) == 2:
            values.append(self.value(x, self.second))
        return TrialResult(
            trial_number=trial_number,
            values=values,
            scores={"distance": -values[0]},
            samples=[{"question": "genome", "answer": " ".join(f"{v:.3f}" for v in x[:8])}],
            timings={"judge_s": time.perf_counter() - t0},
        )


@dataclass
class _Encoded:
    """A staged quadratic trial between its stages."""

    trial_number: int
    x: np.ndarray
    generate_s: float


class StagedQuadraticEvaluator(QuadraticEvaluator):
    """:class:`QuadraticEvaluator` in two stages, for ``search.overlap_judging``: the fault
    options (``sleep_s``: simulated generation) act in ``generate_stage``; ``judge_sleep_s``
    simulates a remote judge in ``judge_stage``, which raises in ``judge_fail_trials``."""

    def __init__(
        self,
        space: SearchSpace,
        *,
        judge_sleep_s: float = 0.0,
        judge_fail_trials: Sequence[int] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(space, **kwargs)
        self.judge_sleep_s = judge_sleep_s
        self.judge_fail_trials = set(judge_fail_trials)

    def generate_stage(self, trial_number: int, recipe: MergeRecipe) -> _Encoded:
        t0 = time.perf_counter()
        self.faults.before(trial_number)
        x = self.space.encode(recipe)
        return _Encoded(trial_number, x, time.perf_counter() - t0)

    def judge_stage(self, encoded: _Encoded) -> TrialResult:
        t0 = time.perf_counter()
        if self.judge_sleep_s > 0:
            time.sleep(self.judge_sleep_s)
        if encoded.trial_number in self.judge_fail_trials:
            raise RuntimeError(f"injected judge failure (trial {encoded.trial_number})")
        values = [self.value(encoded.x, self.target)]
        if len(self.directions) == 2:
            values.append(self.value(encoded.x, self.second))
        return TrialResult(
            trial_number=encoded.trial_number,
            values=values,
            scores={"distance": -values[0]},
            timings={"generate_s": encoded.generate_s, "judge_s": time.perf_counter() - t0},
        )

    def evaluate(self, trial_number: int, recipe: MergeRecipe) -> TrialResult:
        return self.judge_stage(self.generate_stage(trial_number, recipe))


def _faults(options: dict[str, Any], run_dir: Path) -> FaultInjector:
    keys = (
        "fail_trials",
        "fail_message",
        "unreachable_trials",
        "crash_once_trials",
        "sleep_s",
        "slow_trials",
    )
    return FaultInjector(
        **{k: options.pop(k) for k in keys if k in options}, marker_dir=Path(run_dir)
    )


def quadratic_evaluator(
    config: RunConfig, *, device: str, worker_index: int, run_dir: Path, **options: Any
) -> QuadraticEvaluator:
    """Factory for run.yaml: options ``target``, ``seed``, ``n_objectives`` + fault options."""
    faults = _faults(options, run_dir)
    return QuadraticEvaluator(build_space(config), faults=faults, **options)


def staged_quadratic_evaluator(
    config: RunConfig, *, device: str, worker_index: int, run_dir: Path, **options: Any
) -> StagedQuadraticEvaluator:
    """Factory for run.yaml: :func:`quadratic_evaluator`'s options + ``judge_sleep_s``,
    ``judge_fail_trials``."""
    faults = _faults(options, run_dir)
    return StagedQuadraticEvaluator(build_space(config), faults=faults, **options)


class WeightDistanceEvaluator:
    """Minus the distance between the merged weights and a hidden target merge.

    Both come from the real :class:`evomerge.merge.MergeEngine` on the run's pool. The
    value is ``-||merge(recipe) - merge(x*)|| / ||merge(x0) - merge(x*)||`` over all
    tensors: -1 at the start point ``x0``, 0 at the hidden optimum ``x*``.
    """

    def __init__(
        self,
        config: RunConfig,
        *,
        device: str = "cpu",
        target: Sequence[float] | None = None,
        seed: int = 1234,
        faults: FaultInjector | None = None,
    ) -> None:
        pool = open_pool(config)
        self.space = build_space(config, pool)
        dtype = to_torch(config.merge.dtype)
        self.engine = MergeEngine(
            pool,
            device=device,
            dtype=dtype,
            seed=config.merge.seed,
            methods=[self.space.spec.method],
        )
        x_star = (
            np.asarray(target, dtype=float)
            if target is not None
            else hidden_optimum(self.space, seed)
        )
        # materialize() reuses its output tensors: keep copies of the target
        self.target = {
            k: v.detach().float().clone()
            for k, v in self.engine.materialize(self.space.decode(x_star)).items()
        }
        self.scale = self._distance(self.space.decode(self.space.x0())) or 1.0
        self.objective_names = ["closeness"]
        self.directions = ["maximize"]
        self.faults = faults or FaultInjector()

    def _distance(self, recipe: MergeRecipe) -> float:
        merged = self.engine.materialize(recipe)
        total = 0.0
        for name, t in self.target.items():
            total += float(((merged[name].float() - t) ** 2).sum())
        return math.sqrt(total)

    def evaluate(self, trial_number: int, recipe: MergeRecipe) -> TrialResult:
        self.faults.before(trial_number)
        t0 = time.perf_counter()
        value = -self._distance(recipe) / self.scale
        return TrialResult(
            trial_number=trial_number,
            values=[value],
            scores={"relative_distance": -value},
            timings={"merge_s": time.perf_counter() - t0},
        )


def weight_distance_evaluator(
    config: RunConfig, *, device: str, worker_index: int, run_dir: Path, **options: Any
) -> WeightDistanceEvaluator:
    """Factory for run.yaml: options ``target``, ``seed`` + fault options."""
    faults = _faults(options, run_dir)
    return WeightDistanceEvaluator(config, device=device, faults=faults, **options)
