"""Search scaling on the demo's real pipeline: trials/hour with 1 and 2 Ray workers, start-up
apart, driver overhead per trial; the evaluator in this process as the peer.

Each measured search is a real ``evomerge search`` session (``run_search``: Ray on 127.0.0.1, worker actors each holding the demo's
pool, merge engine, ``hf`` generator and judges, the Driver asking CMA-ES and telling it
results) on the demo's run.yaml (``demo_run_config``: task-arithmetic weights per source
and group of 2 layers, 24 search prompts, style + facts + fluency), with ``--trials``
trials and ``workers.num`` set to 1, then 2, in a fresh run directory each time. Reported
per worker count:

- ``startup_s``: from the call to the first dispatch (worker actors building their
  evaluators, opening the study), i.e. ``wall_s - search_loop_s``; the local Ray cluster
  is started once for all searches (the search's own ``ray_session``, reused by each
  ``run_search`` as it would be on a running cluster) and its start reported apart
  (``ray_start_s``: an ``evomerge search`` without ``--address`` pays it once per call);
- ``workers_started``: the worker actors the search started; ``workers_used``: those that
  ran a trial (a worker still starting when the last trial ends takes none);
- ``worker_first_trial_s``: when each worker took its first trial, seconds since the
  call (the first worker up starts the loop, the others join when ready);
- ``trials_per_hour``: over the search loop (first dispatch to last tell), start-up
  excluded; ``trials_per_hour_end_to_end``: over the whole call, start-up included;
  ``trials_per_hour_all_up``: over the trials finished after every worker had joined
  (None when fewer than 4 per worker did);
- ``driver_overhead_s_per_trial``: driver-side seconds per trial (ask, decode, tell,
  journal writes), from the Driver's own counters; the sampler's first ask in a process
  (CMA-ES imports its numerical code: seconds) is made before the searches and reported
  apart (``sampler_warm_up_s``);
- ``worker_eval_s_per_trial``: the workers' own seconds per trial (merge + generate +
  judge, from the trials' stored timings), and ``dispatch_overhead_s_per_trial``: what
  the loop spent per trial and worker beyond that (Ray round trips, driver, idle).

The peer, measured in the same run: the same evaluator (``PipelineEvaluator``) built in
this process without Ray, evaluating the 1-worker run's own recipes one after another
(``in_process``: its build time apart, then trials/hour). ``ideal_trials_per_hour`` is
workers x the peer's rate; ``efficiency`` the measured rate over it. On a CPU shared with
other jobs, 2 workers only help as far as a second core is free: the figures say what this
machine gave, under the load recorded in ``load_average``.

    python benchmarks/scaling.py                    # full-size demo models, 80 trials, 1 and 2 workers
    python benchmarks/scaling.py --quick            # tiny models, 8 trials
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml


def _models(size: str, cache_dir: Path | None) -> tuple[Any, float]:
    from evomerge.demo import SIZES, build_demo_models, default_cache_dir

    cache = cache_dir or (default_cache_dir() if size == "full" else default_cache_dir() / size)
    t0 = time.perf_counter()
    return build_demo_models(cache, size=SIZES[size], progress=False), time.perf_counter() - t0


class _StartedWorkers(logging.Handler):
    """How many worker actors the search started: the count in its ``starting N <device>
    worker(s)`` record (``evomerge.search`` logs it once per search, at INFO)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count: int | None = None
        self._logger = logging.getLogger("evomerge.search")

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("starting %d") and record.args:
            self.count = int(record.args[0])  # type: ignore[index]

    def __enter__(self) -> _StartedWorkers:
        self._level = self._logger.level
        self._logger.setLevel(logging.INFO)
        self._logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)


def _since(t0: datetime.datetime, t: datetime.datetime | None) -> float:
    assert t is not None
    return (t - t0).total_seconds()


def warm_up_sampler(models: Any, root: Path) -> float:
    """Seconds for the demo's sampler to answer its first asks in this process (CMA-ES's
    first ask imports its numerical code): paid once per process, so not per trial."""
    import optuna

    from evomerge.config import load_run_config
    from evomerge.demo.run import demo_run_config
    from evomerge.run import build_space, open_pool
    from evomerge.search import distributions, make_sampler

    path = root / "warm_up.yaml"
    path.write_text(yaml.safe_dump(demo_run_config(models, trials=1), allow_unicode=True))
    config = load_run_config(path)
    dists = distributions(build_space(config, open_pool(config)))
    t0 = time.perf_counter()
    study = optuna.create_study(
        direction="maximize", sampler=make_sampler(config.search, n_objectives=1, seed=0)
    )
    for i in range(3):
        study.tell(study.ask(dists), float(i))
    return time.perf_counter() - t0


def measure_search(models: Any, root: Path, workers: int, trials: int) -> dict[str, Any]:
    """One real search with ``workers`` Ray workers; its rates and overheads."""
    from evomerge.demo.run import demo_run_config
    from evomerge.run import attrs, open_run
    from evomerge.search import run_search

    path = root / f"run{workers}.yaml"
    cfg = demo_run_config(models, trials=trials, workers=workers, seed=0)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    run_dir = root / f"rd{workers}"
    called, t0 = datetime.datetime.now(), time.perf_counter()  # optuna's trial times: local, naive
    with _StartedWorkers() as started:
        s = run_search(path, run_dir=run_dir, progress=False)
    wall = time.perf_counter() - t0
    finished = s.n_complete + s.n_failed
    loop_s = finished * 3600 / s.trials_per_hour  # first dispatch to last tell
    done = open_run(run_dir).study.complete()
    evals = [float(t.user_attrs[attrs.TIMINGS]["total_s"]) for t in done]
    # when each worker took its first trial (it was ready then), seconds since the call
    first: dict[str, float] = {}
    for t in sorted(done, key=lambda t: t.datetime_start):
        first.setdefault(str(t.user_attrs.get(attrs.WORKER, "")), _since(called, t.datetime_start))
    all_up = max(first.values())
    end = max(_since(called, t.datetime_complete) for t in done)
    after = sum(1 for t in done if _since(called, t.datetime_complete) > all_up)
    per_trial_slot = loop_s * workers / finished
    return {
        "workers": workers,
        "trials": finished,
        "failed": s.n_failed,
        "workers_started": started.count,
        "workers_used": len(first),
        "worker_first_trial_s": sorted(round(v, 2) for v in first.values()),
        "wall_s": round(wall, 3),
        "startup_s": round(wall - loop_s, 3),
        "search_loop_s": round(loop_s, 3),
        "trials_per_hour": round(s.trials_per_hour, 1),
        "trials_per_hour_end_to_end": round(finished * 3600 / wall, 1),
        # from the moment every worker that ran a trial had taken its first one
        "trials_per_hour_all_up": (
            round(after * 3600 / (end - all_up), 1) if after >= 4 * workers else None
        ),
        "driver_overhead_s_per_trial": round(s.driver_overhead_s, 4),
        "worker_eval_s_per_trial": round(statistics.mean(evals), 4),
        "dispatch_overhead_s_per_trial": round(per_trial_slot - statistics.mean(evals), 4),
        "best": s.best_values[0] if s.best_values else None,
        "_run_dir": run_dir,
    }


def measure_in_process(run_dir: Path, limit: int) -> dict[str, Any]:
    """The peer: the search's evaluator in this process, on the run's first ``limit`` recipes."""
    import torch

    from evomerge.config import load_run_config
    from evomerge.run import RUN_YAML, open_run
    from evomerge.search import PipelineEvaluator

    run = open_run(run_dir)
    trials = sorted(run.study.complete(), key=lambda t: t.number)[:limit]
    config = load_run_config(run_dir / RUN_YAML)
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # as the search's CPU workers (cpus_per_worker: 1)
    try:
        t0 = time.perf_counter()
        evaluator = PipelineEvaluator(config, device="cpu")
        build_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        same = 0
        for t in trials:
            r = evaluator.evaluate(t.number, run.study.recipe(t))
            same += bool(r.ok and abs(r.values[0] - t.values[0]) <= 1e-9)  # type: ignore[index]
        loop_s = time.perf_counter() - t1
    finally:
        torch.set_num_threads(old)
    return {
        "trials": len(trials),
        "build_s": round(build_s, 2),
        "loop_s": round(loop_s, 2),
        "s_per_trial": round(loop_s / len(trials), 4),
        "trials_per_hour": round(len(trials) * 3600 / loop_s, 1),
        "same_values_as_search": same,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--trials", type=int, default=None, help="trials per search (default 80)")
    p.add_argument("--size", choices=["full", "small", "tiny"], default="full", help="demo models")
    p.add_argument(
        "--cache-dir", type=Path, default=None, help="demo models (default: the demo's cache)"
    )
    p.add_argument("--quick", action="store_true", help="tiny models, 8 trials")
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.trials = "tiny", args.trials or 8
    args.trials = args.trials or 80
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = datetime.datetime.now(datetime.timezone.utc)
    t0, load0 = time.perf_counter(), os.getloadavg()
    models, build_s = _models(args.size, args.cache_dir)
    results = []
    from evomerge.config import RayConfig
    from evomerge.search._cluster import ray_session  # the search's own Ray start-up

    with tempfile.TemporaryDirectory(prefix="evbench-scale") as tmp:
        warm_up_s = warm_up_sampler(models, Path(tmp))
        t1 = time.perf_counter()
        with ray_session(RayConfig()):  # local, 127.0.0.1, no dashboard; the searches reuse it
            ray_start_s = time.perf_counter() - t1
            for n in args.workers:
                results.append(measure_search(models, Path(tmp), n, args.trials))
        peer = measure_in_process(results[0]["_run_dir"], args.trials)
    for r in results:
        del r["_run_dir"]
        r["ideal_trials_per_hour"] = round(r["workers"] * peer["trials_per_hour"], 1)
        r["efficiency"] = round(r["trials_per_hour"] / r["ideal_trials_per_hour"], 3)
        r["speedup_vs_first"] = round(r["trials_per_hour"] / results[0]["trials_per_hour"], 3)
    import torch

    out = {
        "benchmark": "scaling",
        "date": started.isoformat(timespec="seconds"),
        "evaluator": "pipeline (the demo's run.yaml: merge + hf generation + judges)",
        "size": args.size,
        "trials": args.trials,
        "build_models_s": round(build_s, 1),
        "ray_start_s": round(ray_start_s, 2),
        "sampler_warm_up_s": round(warm_up_s, 2),
        "results": results,
        "in_process": peer,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "optuna": optuna.__version__,
        },
        "load_average": {
            "start": [round(v, 2) for v in load0],
            "end": [round(v, 2) for v in os.getloadavg()],
        },
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
