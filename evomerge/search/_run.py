"""``run_search``: one search session on a run directory (start or resume), as a library call.

The post-search steps (conflict analysis, report) are not part of it: the ``evomerge
search`` command runs them after it (:func:`evomerge.orchestrate.search_and_report`).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage

from evomerge.atomic import DISK_ERRNOS, write_error
from evomerge.config import RunConfig, load_run_config
from evomerge.exceptions import ConfigError, SearchError
from evomerge.interrupt import interruptible
from evomerge.run import (
    StudyView,
    build_run_space,
    check_same_run,
    driver_lock,
    make_driver_storage,
    open_study,
    recover_interrupted,
    repair_journal,
    storage_path,
    stored_canonical,
    write_run_yaml,
)
from evomerge.run import attrs as A
from evomerge.search._cluster import plan_workers, ray_session
from evomerge.search._driver import Driver
from evomerge.search._inputs import check_inputs
from evomerge.search._sampler import make_sampler, preload_sampler
from evomerge.search._types import SearchSummary
from evomerge.search._workers import WorkerGroup
from evomerge.space import DataflowSpace, SearchSpace

logger = logging.getLogger(__name__)

__all__ = ["default_run_dir", "run_search"]


def default_run_dir(config: RunConfig) -> Path:
    """``runs/<name>``: where a run goes when no ``--run-dir`` is given."""
    return Path("runs") / config.name


def _existing_trials(storage: optuna.storages.BaseStorage, name: str) -> int:
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return 0
    return len(storage.get_all_trials(study_id, deepcopy=False))


def _prepare_study(
    config: RunConfig, run_dir: Path, space: SearchSpace | DataflowSpace, info: dict[str, Any]
) -> tuple[optuna.Study, BaseStorage, Callable[[], None]]:
    """Open (or create) the study, recover a dead driver's trials, enqueue the start point.

    Returns the study, its storage and the storage's ``commit``."""
    names, directions = list(info["objective_names"]), list(info["directions"])
    storage, commit = make_driver_storage(run_dir, config.search.storage)
    seed = config.search.seed + _existing_trials(storage, config.name)
    sampler = make_sampler(config.search, n_objectives=len(directions), seed=seed)
    study, created = open_study(
        storage=storage, study_name=config.name, sampler=sampler, directions=directions
    )
    if created:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)  # shown by optuna-dashboard
        study.set_user_attr(A.OBJECTIVE_NAMES, names)
        study.set_user_attr(A.SPACE, space.spec.name)
        study.set_user_attr(A.SAMPLER, config.search.sampler)
        study.set_user_attr(A.GENOME, space.names_in_order)
    stored_names = study.user_attrs.get(A.OBJECTIVE_NAMES)
    if stored_names is not None and list(stored_names) != names:
        raise SearchError(
            f"the study's objectives are {stored_names}, the evaluator now gives {names}; use a new run directory"
        )
    if isinstance(space, DataflowSpace):
        _pin_sources(study, space, created=created)
    _pin_prompt_order(study, info.get("prompt_order"), created=created)
    recover_interrupted(study, storage)
    trials = study.get_trials(deepcopy=False)
    if config.search.x0 == "equal" and not any(t.user_attrs.get(A.START_POINT) for t in trials):
        study.enqueue_trial(space.to_params(space.x0()), user_attrs={A.START_POINT: True})
    commit()
    return study, storage, commit


def _pin_sources(study: optuna.Study, space: DataflowSpace, *, created: bool) -> None:
    """A data-flow study keeps its sources as first resolved; a resume must resolve them
    the same (a ``run:`` source's best trial may have changed meanwhile)."""
    now = {n: s.to_dict() for n, s in space.sources.items()}
    if created:
        study.set_user_attr(A.PATH_SOURCES, now)
        return
    stored = study.user_attrs.get(A.PATH_SOURCES)
    if stored is None or stored == now:
        return
    changed = sorted(n for n in set(now) | set(stored) if now.get(n) != stored.get(n))
    raise SearchError(
        f"space.sources: {changed} resolve to other models than when this study started "
        "(a previous run's best trial may have changed); pin it with 'trial: N', or use a new "
        "run directory"
    )


def _pin_prompt_order(study: optuna.Study, order: list[str] | None, *, created: bool) -> None:
    """With search.pruning the trials' per-prompt scores are paired by position in one fixed
    prompt order: a resume must use the same (the prompt set must not have changed)."""
    if order is None:
        return
    stored = study.user_attrs.get(A.PROMPT_ORDER)
    if stored is None:
        if not created and any(
            A.PROMPT_SCORES in t.user_attrs for t in study.get_trials(deepcopy=False)
        ):
            raise SearchError("search.pruning: the study's prompt order was not recorded")
        study.set_user_attr(A.PROMPT_ORDER, list(order))
    elif list(stored) != list(order):
        raise SearchError(
            "generation.prompts: the search prompts differ from the ones this pruned study "
            "started with (per-prompt scores would be paired wrongly); use a new run directory"
        )


def _summary(
    study: optuna.Study,
    run_dir: Path,
    target: int,
    stopped: str,
    driver: Driver | None,
    elapsed: float,
) -> SearchSummary:
    view = StudyView(study)
    counts = view.counts()
    n_complete, n_failed = counts.complete, counts.failed
    directions = view.directions
    best = view.best()
    return SearchSummary(
        run_dir=run_dir,
        n_complete=n_complete,
        n_failed=n_failed,
        n_target=target,
        directions=directions,
        best_trial=best.number if best is not None else None,
        best_values=list(best.values) if best is not None else None,
        stopped=stopped,
        elapsed_s=elapsed,
        trials_per_hour=driver.trials_per_hour if driver is not None else 0.0,
        driver_overhead_s=driver.mean_overhead_s if driver is not None else math.nan,
        extra={"pareto_size": len(view.pareto())} if len(directions) > 1 else {},
        n_pruned=counts.pruned,
    )


def _per_worker(config: RunConfig, n_workers: int) -> int:
    """Trials in flight per worker: 2 with ``search.overlap_judging`` (one generating, one
    judging), else 1. The config checked a CMA-ES population against ``workers.num``; the
    number of workers is known only now (``auto``, ``--workers``), so check it again."""
    if not config.search.overlap_judging:
        return 1
    pop = config.search.population_size
    if config.search.sampler == "cmaes" and pop is not None and pop < 2 * n_workers:
        raise ConfigError(
            f"search.overlap_judging: keeps 2 trials in flight on each of {n_workers} worker(s), "
            f"more than search.population_size {pop}; raise population_size to >= "
            f"{2 * n_workers}, use fewer workers, or set overlap_judging to false"
        )
    return 2


def _first_error(study: optuna.Study) -> str:
    for t in study.get_trials(deepcopy=False):
        if t.state == optuna.trial.TrialState.FAIL and not t.user_attrs.get(A.INTERRUPTED):
            return str(t.user_attrs.get(A.ERROR, "no message"))
    return "no message"


def run_search(
    run_yaml: str | Path,
    *,
    run_dir: str | Path | None = None,
    address: str | None = None,
    workers: int | None = None,
    max_trials: int | None = None,
    progress: bool = True,
) -> SearchSummary:
    """Run, or resume, the search of ``run_yaml`` in ``run_dir`` (default ``runs/<name>``).
    The post-search steps are not run (see :func:`evomerge.orchestrate.search_and_report`).

    Re-running with the same config on the same run directory resumes: completed trials
    are kept, trials a dead driver left running are marked failed and re-asked, the
    sampler's state carries over. ``max_trials`` replaces ``search.n_trials`` as the
    number of finished trials to reach (COMPLETE + PRUNED + FAIL after retries). ``address`` joins
    a Ray cluster (default: a local one on 127.0.0.1); ``workers`` overrides the number
    of worker actors.

    Raises ConfigError for a bad config or a run directory holding a different search,
    and SearchError when no worker can start, every worker died or
    ``search.stop_after_infra_failures`` evaluations in a row failed for an infrastructure
    reason (the run stays resumable in both cases), or the target was reached without one
    completed trial. Ctrl-C / SIGTERM during the search stop it cleanly and return with
    ``stopped="interrupted"`` (during worker start-up, KeyboardInterrupt propagates).
    """
    started = time.monotonic()
    config = load_run_config(run_yaml)
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(config)
    target = max_trials if max_trials is not None else config.search.n_trials
    if target < 1:
        raise SearchError(f"--max-trials must be >= 1, got {target}")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if err.errno in DISK_ERRNOS:
            raise write_error(err, run_dir, what="the run directory") from err
        raise
    with driver_lock(run_dir):
        stored = stored_canonical(run_dir)
        if stored is not None:
            check_same_run(stored, config.canonical(), run_dir=run_dir)
        elif storage_path(run_dir, config.search.storage).exists():
            raise SearchError(f"{run_dir} holds a study but no run.yaml; use a new run directory")
        write_run_yaml(run_dir, config)
        if config.search.storage == "journal":
            repair_journal(storage_path(run_dir, "journal"))
        space = build_run_space(config)
        check_inputs(config)  # every file a worker reads, before Ray starts
        logger.info("search space %s: %d dimensions", space.spec.name, space.dim)
        driver: Driver | None = None
        study: optuna.Study | None = None
        stopped = "interrupted"
        with interruptible(), ray_session(config.ray, address=address):
            import ray

            plan = plan_workers(config.workers, resources=ray.cluster_resources(), num=workers)
            per_worker = _per_worker(config, plan.num)
            group = WorkerGroup(
                config_data=config.model_dump(mode="json"),
                run_dir=run_dir.resolve(),
                plan=plan,
                max_restarts=config.workers.max_restarts,
                start_timeout_s=config.workers.start_timeout_s,
                per_worker=per_worker,
            )
            try:
                logger.info("starting %d %s worker(s)", plan.num, plan.device)
                preload_sampler(config.search)  # while the workers build their models
                info = group.start()
                study, storage, commit = _prepare_study(config, run_dir, space, info)
                study.set_user_attr(A.N_TARGET, target)
                driver = Driver(
                    study=study,
                    storage=storage,
                    space=space,
                    group=group,
                    target=target,
                    finished=StudyView(study).counts().finished,
                    retries=config.search.retries,
                    trial_timeout_s=config.search.trial_timeout_s,
                    progress=progress,
                    desc=config.name,
                    commit=commit,
                    infra_failures=config.search.stop_after_infra_failures,
                    pruning=config.search.pruning,
                )
                stopped = driver.run()
            finally:
                group.shutdown()
        if study is None:  # pragma: no cover - group.start() raised instead
            raise SearchError("the study could not be opened")
        summary = _summary(study, run_dir, target, stopped, driver, time.monotonic() - started)
    logger.info(
        "search %s: %d complete, %d pruned, %d failed of %d; best trial %s %s",
        stopped,
        summary.n_complete,
        summary.n_pruned,
        summary.n_failed,
        target,
        summary.best_trial,
        summary.best_values,
    )
    if stopped == "infrastructure" and driver is not None:
        raise SearchError(
            f"stopped after {driver.infra_streak} evaluation(s) in a row failed for a reason outside "
            f"the candidates (search.stop_after_infra_failures: {config.search.stop_after_infra_failures}): "
            f"{driver.infra_error}. {summary.n_complete + summary.n_failed + summary.n_pruned}/{target} trials finished and are "
            "kept; fix the cause and run the same command again to resume"
        )
    if stopped == "done" and summary.n_complete == 0:
        raise SearchError(
            f"no trial completed: all {summary.n_failed} finished trial(s) failed (first error: "
            f"{_first_error(study)}); see `evomerge status {run_dir}`, fix the cause, and use a new run "
            "directory (or raise --max-trials to go on in this one)"
        )
    if stopped == "workers_lost":
        raise SearchError(
            f"every worker died and none could be restarted ({summary.n_complete + summary.n_failed + summary.n_pruned}/{target} trials "
            f"finished); the run is resumable: fix the cluster and run the same command again"
        )
    return summary
