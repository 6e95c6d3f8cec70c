"""The dispatch loop: ask a trial whenever a worker is free, tell results as they arrive.

No worker waits for the slowest trial of a generation: CMA-ES asks beyond the current
generation are answered by optuna from the same distribution. An evaluation that fails
is retried (``retries`` times), then told FAIL with its error; a worker that dies is
replaced and its trial retried (a death counts as an attempt, with at least one retry).
Ctrl-C marks the trials in flight FAIL ``interrupted`` and re-enqueues their parameters.

An evaluation that fails for an infrastructure reason (``TrialResult.infrastructure``:
the judge endpoint is down or refuses the key, the generator died) is not the
candidate's fault: it does not use up a retry, and after ``infra_failures`` such failures
in a row (no evaluation succeeding or failing on its own in between) the driver stops with
``"infrastructure"``, keeping what finished and putting the rest back like Ctrl-C does.

With ``search.overlap_judging`` a worker holds two trials (``WorkerGroup.per_worker``):
it generates one while it judges the other. Each result comes back on its own Ray ref and
is told to its own trial. When such a worker dies, every trial it held is retried (each
charged an attempt: which one killed it is unknown); when one of them times out, the
worker is replaced, that trial is charged and the other goes back to the queue uncharged.
A trial's timeout counts from its dispatch, so it includes waiting for the accelerator
behind the other trial's generation.

With ``pruning`` (``search.pruning``) each job carries a :class:`PruneGuide`: the
incumbent's value and per-prompt scores (summed and per judge) of the best complete
trial. A trial the worker stopped early is told PRUNED after its ``pruned_value`` (a
paired estimate of its full value, held below that incumbent's) is reported as its one
intermediate value, at step = the number of prompts it used; it counts toward ``target``
and never becomes the incumbent. The samplers read that value (CMA-ES ranks the trial in
its generation by it; see :mod:`evomerge.search._sampler`).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage
from optuna.trial import TrialState
from tqdm.auto import tqdm

from evomerge.config import PruningConfig
from evomerge.merge.path import LayerPath
from evomerge.run import INTERRUPTED_ERROR, StudyView, rank_key, recover_interrupted
from evomerge.run import attrs as A
from evomerge.search._prune import PruneGuide
from evomerge.search._sampler import distributions
from evomerge.search._types import TrialResult
from evomerge.search._workers import Slot, WorkerGroup, ray_cause
from evomerge.space import DataflowSpace, SearchSpace

logger = logging.getLogger(__name__)

__all__ = ["Driver", "DriverStats", "report_pruned"]

_SAMPLE_LIMIT = 3


@dataclass
class _Job:
    trial: optuna.Trial
    recipe: dict[str, Any]  # a recipe's mergekit dict, or a data-flow path's to_dict
    attempts: int = 0
    infra_attempts: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class _Running:
    job: _Job
    slot: Slot
    started: float


@dataclass
class DriverStats:
    """Counters of one driver session."""

    finished_before: int = 0
    n_complete: int = 0
    n_failed: int = 0
    n_pruned: int = 0
    overhead_s: float = 0.0
    started: float = field(default_factory=time.monotonic)
    best_values: list[float] | None = None
    best_trial: int | None = None

    @property
    def finished_now(self) -> int:
        return self.n_complete + self.n_failed + self.n_pruned


def report_pruned(trial: optuna.Trial, prompt_scores: list[Any], value: float | None) -> None:
    """Report a pruned trial's ranking value (``pruned_value``) as its one intermediate
    value, at step = the number of prompts it used: optuna then takes it as the PRUNED
    trial's value, CMA-ES (``consider_pruned_trials``) ranks the trial by it and TPE orders
    pruned trials by (step, value). Nothing is reported without a finite value (then every
    sampler leaves the trial out of its ranking, as before any incumbent existed)."""
    if value is not None and math.isfinite(value):
        trial.report(float(value), len(prompt_scores))


class Driver:
    """One search session over ``study`` with the workers of ``group``. Single-threaded."""

    def __init__(
        self,
        *,
        study: optuna.Study,
        storage: BaseStorage,
        space: SearchSpace | DataflowSpace,
        group: WorkerGroup,
        target: int,
        finished: int,
        retries: int,
        trial_timeout_s: float | None,
        progress: bool,
        desc: str = "search",
        commit: Callable[[], None] | None = None,
        infra_failures: int = 3,
        pruning: PruningConfig | None = None,
    ) -> None:
        self.study = study
        self.storage = storage
        self.space = space
        self.group = group
        self.target = target
        self.retries = retries
        self.trial_timeout_s = trial_timeout_s
        self.infra_failures = infra_failures
        self.infra_streak = 0  # infrastructure failures in a row
        self.infra_error: str | None = None  # the last one
        self.stats = DriverStats(finished_before=finished)
        self._commit = commit or (lambda: None)
        self._dists: dict[str, BaseDistribution] = dict(distributions(space))
        self._queue: deque[_Job] = deque()
        self._running: dict[Any, _Running] = {}  # ObjectRef -> running trial
        self._load: dict[int, int] = {}  # slot index -> trials in flight on it
        self._directions = [d.name.lower() for d in study.directions]
        self._rank = rank_key(self._directions)
        self.pruning = pruning if pruning is not None and pruning.enabled else None
        self._incumbent: list[float | None] | None = None  # the best's prompt_scores
        self._incumbent_judges: dict[str, list[float | None]] | None = None  # ... per judge
        self._init_best()
        self._bar = tqdm(
            total=target,
            initial=min(finished, target),
            disable=not progress,
            desc=desc,
            unit="trial",
            dynamic_ncols=True,
        )
        self._update_bar()

    # -- bookkeeping ----------------------------------------------------------------------

    @property
    def finished(self) -> int:
        return self.stats.finished_before + self.stats.finished_now

    def _init_best(self) -> None:
        if len(self._directions) != 1:
            return  # several objectives: the bar shows no single best
        best = StudyView(self.study).best()
        if best is not None:
            self.stats.best_values, self.stats.best_trial = list(best.values), best.number
            self._incumbent = best.user_attrs.get(A.PROMPT_SCORES)
            self._incumbent_judges = best.user_attrs.get(A.PROMPT_JUDGE_SCORES)

    def _guide(self) -> dict[str, Any] | None:
        if self.pruning is None:
            return None
        best = self.stats.best_values
        return PruneGuide(
            incumbent=self._incumbent,
            chunk_size=self.pruning.chunk_size,
            p_threshold=self.pruning.p_threshold,
            n_startup_steps=self.pruning.n_startup_steps,
            maximize=self._directions[0] == "maximize",
            incumbent_value=None if best is None else best[0],
            incumbent_judges=self._incumbent_judges,
        ).to_dict()

    def _note_best(
        self,
        number: int,
        values: list[float],
        prompt_scores: list[float | None] | None = None,
        judge_scores: dict[str, list[float | None]] | None = None,
    ) -> None:
        """Keep the incumbent up to date by the run layer's ranking (no study scan per tell)."""
        if len(values) != 1:
            return
        best, best_number = self.stats.best_values, self.stats.best_trial
        if (
            best is None
            or best_number is None
            or self._rank(values, number) < self._rank(best, best_number)
        ):
            self.stats.best_values, self.stats.best_trial = list(values), number
            self._incumbent = prompt_scores
            self._incumbent_judges = judge_scores

    def _update_bar(self) -> None:
        elapsed = max(time.monotonic() - self.stats.started, 1e-9)
        post: dict[str, Any] = {"per_h": f"{3600 * self.stats.finished_now / elapsed:.0f}"}
        if self.stats.best_values is not None:
            post["best"] = f"{self.stats.best_values[0]:.4g}"
        if self.stats.n_failed:
            post["failed"] = self.stats.n_failed
        if self.stats.n_pruned:
            post["pruned"] = self.stats.n_pruned
        self._bar.set_postfix(post, refresh=False)
        self._bar.refresh()

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> str:
        """Run until ``target`` trials are finished. Returns ``"done"``, ``"interrupted"``
        (Ctrl-C / SIGTERM), ``"workers_lost"`` (every worker dead, restarts spent) or
        ``"infrastructure"`` (``infra_failures`` infrastructure failures in a row; the last
        one in :attr:`infra_error`). The study is left resumable in every case."""
        try:
            while True:
                if self.infra_streak >= self.infra_failures:
                    return self._stop("infrastructure")
                if self.finished >= self.target and not self._running:
                    return "done"
                self._dispatch()
                self._commit()  # the asked trials' parameters and recipes are durable
                refs = list(self._running) + self.group.starting_refs()
                if not refs:
                    if self.group.all_dead or not self.group.ready_slots:
                        return self._stop("workers_lost")
                    if self.finished >= self.target:
                        return "done"
                    continue
                ready, _ = self.group.ray.wait(refs, num_returns=1, timeout=0.5)
                for ref in ready:
                    if ref in self._running:
                        self._on_result(ref)
                    else:
                        self.group.on_started(ref)
                self._check_timeouts()
                self.group.check_start_deadlines()
                self._commit()
        except KeyboardInterrupt:
            return self._stop("interrupted")
        finally:
            self._bar.close()

    def _dispatch(self) -> None:
        # every free worker gets a trial before any gets its second (overlap_judging)
        for depth in range(self.group.per_worker):
            for slot in self.group.ready_slots:
                if self._load.get(slot.index, 0) > depth:
                    continue
                job: _Job | None
                if self._queue:
                    job = self._queue.popleft()
                elif self.finished + len(self._running) + len(self._queue) < self.target:
                    job = self._ask()
                else:
                    return
                if job is None:
                    continue
                guide = self._guide()
                if guide is None:
                    ref = slot.actor.evaluate.remote(job.trial.number, job.recipe)
                else:
                    ref = slot.actor.evaluate.remote(job.trial.number, job.recipe, guide)
                self._running[ref] = _Running(job=job, slot=slot, started=time.monotonic())
                self._load[slot.index] = self._load.get(slot.index, 0) + 1

    def _ask(self) -> _Job | None:
        t0 = time.perf_counter()
        trial = self.study.ask(self._dists)
        try:
            genome = self.space.decode(self.space.from_params(trial.params))
        except Exception as err:  # a bad genome fails its trial, not the study
            trial.set_user_attr(A.ERROR, f"cannot decode: {err}")
            self.study.tell(trial, state=TrialState.FAIL)
            self.stats.n_failed += 1
            self._bar.update(1)
            return None
        if isinstance(genome, LayerPath):
            recipe = genome.to_dict()
            trial.set_user_attr(A.PATH, recipe)
        else:
            recipe = genome.to_mergekit_dict()
            trial.set_user_attr(A.RECIPE, recipe)
        self.stats.overhead_s += time.perf_counter() - t0
        return _Job(trial=trial, recipe=recipe)

    def _release(self, ref: Any) -> _Running:
        run = self._running.pop(ref)
        self._load[run.slot.index] -= 1
        return run

    def _release_slot(self, slot: Slot) -> list[_Running]:
        """Take every trial in flight on ``slot`` out of the loop (its actor is going)."""
        return [self._release(r) for r, run in list(self._running.items()) if run.slot is slot]

    def _on_result(self, ref: Any) -> None:
        run = self._release(ref)
        try:
            data = self.group.ray.get(ref)
        except self.group.ray.exceptions.RayError as err:  # the actor (or its node) died
            reason = f"worker {run.slot.index} died: {ray_cause(err)}"
            lost = [run, *self._release_slot(run.slot)]  # overlap: the other trial died too
            self.group.replace(run.slot, reason)
            for gone in lost:
                self._failed(gone.job, reason, None, max(self.retries, 1))
            return
        result = TrialResult(**data)
        if result.pruned and result.error is None:
            self.infra_streak = 0
            self._tell_pruned(run.job, result)
        elif result.ok:
            self.infra_streak = 0
            self._tell_complete(run.job, result)
        elif result.infrastructure:
            self._infra_failed(run.job, result)
        else:
            self.infra_streak = 0
            self._failed(run.job, result.error or "failed", result, self.retries)

    def _infra_failed(self, job: _Job, result: TrialResult) -> None:
        """Not the candidate's failure: try it again later without using up a retry (at most
        ``infra_failures`` times); the loop stops once the streak reaches the limit."""
        self.infra_streak += 1
        self.infra_error = result.error or "infrastructure failure"
        job.infra_attempts += 1
        logger.warning(
            "trial %d: infrastructure failure (%d in a row, the search stops at %d): %s",
            job.trial.number,
            self.infra_streak,
            self.infra_failures,
            self.infra_error,
        )
        if job.infra_attempts > self.infra_failures:  # not the endpoint after all
            self._failed(job, self.infra_error, result, self.retries)
        else:
            self._queue.appendleft(job)

    def _check_timeouts(self) -> None:
        if self.trial_timeout_s is None:
            return
        now = time.monotonic()
        for ref, run in list(self._running.items()):
            if ref in self._running and now - run.started > self.trial_timeout_s:
                self._release(ref)
                beside = self._release_slot(run.slot)  # overlap: killed with the worker
                reason = f"trial timed out after {self.trial_timeout_s:g}s"
                self.group.replace(run.slot, reason)
                self._failed(run.job, reason, None, self.retries)
                for other in beside:  # not its fault: again, without using up a retry
                    logger.info(
                        "trial %d put back: its worker was restarted for trial %d's timeout",
                        other.job.trial.number,
                        run.job.trial.number,
                    )
                    self._queue.appendleft(other.job)

    def _failed(self, job: _Job, reason: str, result: TrialResult | None, retries: int) -> None:
        job.attempts += 1
        job.errors.append(reason)
        if job.attempts <= retries:
            logger.info(
                "trial %d failed (attempt %d), retrying: %s", job.trial.number, job.attempts, reason
            )
            self._queue.appendleft(job)
            return
        t0 = time.perf_counter()
        trial = job.trial
        if result is not None:
            self._set_result_attrs(trial, result)
            if result.traceback:
                trial.set_user_attr(A.TRACEBACK, result.traceback)
        trial.set_user_attr(A.ATTEMPTS, job.attempts)
        trial.set_user_attr(A.ERROR, reason)
        if len(set(job.errors)) > 1:
            trial.set_user_attr(A.ERRORS, job.errors)
        self.study.tell(trial, state=TrialState.FAIL)
        self.stats.overhead_s += time.perf_counter() - t0
        self.stats.n_failed += 1
        logger.warning(
            "trial %d failed after %d attempt(s): %s", trial.number, job.attempts, reason
        )
        self._bar.update(1)
        self._update_bar()

    def _set_result_attrs(self, trial: optuna.Trial, result: TrialResult) -> None:
        if result.scores:
            trial.set_user_attr(A.SCORES, result.scores)
        if result.samples:
            trial.set_user_attr(A.SAMPLES, result.samples[:_SAMPLE_LIMIT])
        trial.set_user_attr(A.TIMINGS, {k: round(v, 4) for k, v in result.timings.items()})
        trial.set_user_attr(A.WORKER, result.worker)
        trial.set_user_attr(A.NODE_ID, result.node_id)
        for key, value in result.extra.items():
            trial.set_user_attr(key, value)

    def _tell_complete(self, job: _Job, result: TrialResult) -> None:
        t0 = time.perf_counter()
        trial = job.trial
        self._set_result_attrs(trial, result)
        trial.set_user_attr(A.ATTEMPTS, job.attempts + 1)
        if job.errors:  # it succeeded on a retry: keep why the earlier attempts failed
            trial.set_user_attr(A.ERRORS, job.errors)
        if result.prompt_scores is not None:
            trial.set_user_attr(A.PROMPT_SCORES, result.prompt_scores)
        values = [float(v) for v in result.values or []]
        self.study.tell(trial, values)
        self.stats.overhead_s += time.perf_counter() - t0
        self.stats.n_complete += 1
        self._note_best(
            trial.number, values, result.prompt_scores, result.extra.get(A.PROMPT_JUDGE_SCORES)
        )
        self._bar.update(1)
        self._update_bar()

    def _tell_pruned(self, job: _Job, result: TrialResult) -> None:
        """Stopped early: keep its partial scores and the prompts it used, report its
        ``pruned_value`` as its intermediate value at step = prompts used, tell it PRUNED."""
        t0 = time.perf_counter()
        trial = job.trial
        self._set_result_attrs(trial, result)
        trial.set_user_attr(A.ATTEMPTS, job.attempts + 1)
        if job.errors:
            trial.set_user_attr(A.ERRORS, job.errors)
        scores = result.prompt_scores or []
        trial.set_user_attr(A.PROMPT_SCORES, scores)
        trial.set_user_attr(A.PROMPT_IDS, result.prompt_ids or [])
        report_pruned(trial, scores, result.extra.get(A.PRUNED_VALUE))
        self.study.tell(trial, state=TrialState.PRUNED)
        self.stats.overhead_s += time.perf_counter() - t0
        self.stats.n_pruned += 1
        logger.info(
            "trial %d pruned after %d prompt(s) (p=%.3g)",
            trial.number,
            len(scores),
            result.extra.get("prune_p", math.nan),
        )
        self._bar.update(1)
        self._update_bar()

    def _stop(self, why: str) -> str:
        """Leave the study resumable: trials in flight or queued go back for re-asking."""
        self._running.clear()
        self._queue.clear()
        # every RUNNING trial is this driver's (it holds the run's lock): the ones in flight,
        # queued for a retry, or just asked when the signal came
        error = (
            f"put back: the search stopped on infrastructure failures ({self.infra_error})"
            if why == "infrastructure"
            else INTERRUPTED_ERROR
        )
        put_back = recover_interrupted(self.study, self.storage, error=error)
        self._commit()
        logger.info(
            "search stopped (%s): %d trial(s) finished, %d put back for the resume",
            why,
            self.finished,
            put_back,
        )
        return why

    @property
    def trials_per_hour(self) -> float:
        elapsed = max(time.monotonic() - self.stats.started, 1e-9)
        return 3600.0 * self.stats.finished_now / elapsed

    @property
    def mean_overhead_s(self) -> float:
        n = self.stats.finished_now
        return self.stats.overhead_s / n if n else math.nan
