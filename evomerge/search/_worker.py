"""The worker: one per GPU (or CPU slot), holding its evaluator resident for the whole run.

:class:`Worker` is a plain class; the driver wraps it with ``ray.remote`` and sends it the
run config (as JSON data) and recipes (as mergekit dicts), never weights. Ray calls one
method at a time, or, with ``search.overlap_judging``, up to two ``evaluate`` calls at once
(a threaded actor): a lock lets one trial at a time use the accelerator (its evaluator's
``generate_stage``) while the trial before it is judged (``judge_stage``) outside the lock.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from evomerge.config import RunConfig
from evomerge.exceptions import ConfigError, is_infrastructure
from evomerge.search._build import build_evaluator
from evomerge.search._prune import PruneGuide
from evomerge.search._types import TrialResult, genome_from_data, is_staged

logger = logging.getLogger(__name__)

__all__ = ["Worker", "resolve_device", "traceback_summary"]

_TRACEBACK_CHARS = 4000


def traceback_summary(err: BaseException) -> str:
    """The last frames of ``err``'s traceback, at most a few thousand characters."""
    text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    return text if len(text) <= _TRACEBACK_CHARS else "...\n" + text[-_TRACEBACK_CHARS:]


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when this process sees a GPU, else ``cpu``."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Worker:
    """Builds the evaluator once, then evaluates recipes until the driver lets it go."""

    def __init__(
        self, config_data: dict[str, Any], run_dir: str, worker_index: int, device: str
    ) -> None:
        logging.getLogger("evomerge").setLevel(logging.WARNING)  # only the driver prints
        self.config = RunConfig.model_validate(config_data)
        self.worker_index = worker_index
        self.device = resolve_device(device)
        self.node_id = _node_id()
        started = time.perf_counter()
        self.evaluator = build_evaluator(
            self.config, device=self.device, worker_index=worker_index, run_dir=Path(run_dir)
        )
        self.startup_s = time.perf_counter() - started
        self.overlap = self.config.search.overlap_judging
        if self.overlap and not is_staged(self.evaluator):
            spec = self.config.evaluator.factory if self.config.evaluator else "pipeline"
            raise ConfigError(
                f"search.overlap_judging: evaluator {spec!r} ({type(self.evaluator).__name__}) "
                "has no separate generate_stage/judge_stage methods, so its judging cannot "
                "overlap the next trial's generation; add them or set overlap_judging to false"
            )
        self._accelerator = threading.Lock()  # one trial at a time in generate_stage

    def describe(self) -> dict[str, Any]:
        """Objective names and directions, plus where this worker runs."""
        return {
            "objective_names": list(self.evaluator.objective_names),
            "directions": list(self.evaluator.directions),
            "node_id": self.node_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "device": self.device,
            "startup_s": self.startup_s,
            "prompt_order": getattr(self.evaluator, "prompt_order", None),
        }

    def evaluate(
        self,
        trial_number: int,
        recipe_data: dict[str, Any],
        guide_data: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Evaluate one recipe (or data-flow path); with ``guide_data`` (a
        :class:`PruneGuide`'s dict) the trial may stop early. Never raises: a failure comes
        back as a TrialResult with ``error`` and ``traceback`` set."""
        started = time.perf_counter()
        try:
            recipe = genome_from_data(recipe_data, source=f"trial {trial_number}")
            if self.overlap:  # the config refuses overlap_judging with pruning
                result = self._staged(trial_number, recipe, started)
            elif guide_data is None:
                result = self.evaluator.evaluate(trial_number, recipe)
            else:
                guide = PruneGuide(**guide_data)
                result = self.evaluator.evaluate(trial_number, recipe, guide=guide)  # type: ignore[call-arg]
            n_obj = len(self.evaluator.directions)
            if result.error is None and not result.pruned:
                if result.values is None or len(result.values) != n_obj:
                    got = None if result.values is None else len(result.values)
                    result.error = f"the evaluator returned {got} value(s) for {n_obj} objective(s)"
                elif not all(math.isfinite(v) for v in result.values):
                    result.error = f"non-finite objective value(s) {result.values}"
        except Exception as err:  # one trial fails, never the worker
            result = TrialResult(
                trial_number=trial_number,
                error=f"{type(err).__name__}: {err}",
                traceback=traceback_summary(err),
                infrastructure=is_infrastructure(err),
            )
        result.trial_number = trial_number
        result.worker = str(self.worker_index)
        result.node_id = self.node_id
        result.timings.setdefault("total_s", time.perf_counter() - started)
        return result.to_dict()

    def _staged(self, trial_number: int, recipe: Any, started: float) -> TrialResult:
        """The accelerator's stage under the lock, then judging outside it (beside the next
        trial's generation). ``wait_s``: time spent waiting for the accelerator."""
        with self._accelerator:
            waited = time.perf_counter() - started
            generated = self.evaluator.generate_stage(trial_number, recipe)  # type: ignore[attr-defined]
        result: TrialResult = self.evaluator.judge_stage(generated)  # type: ignore[attr-defined]
        result.timings["wait_s"] = waited
        return result


def _node_id() -> str:
    try:
        import ray

        if ray.is_initialized():
            return str(ray.get_runtime_context().get_node_id())
    except Exception:  # not under Ray
        pass
    return socket.gethostname()
