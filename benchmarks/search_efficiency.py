"""Search efficiency on the demo's real objective: CMA-ES vs TPE vs random vs the uniform grid.

The objective is the demo's (``evomerge demo``): real task-arithmetic merges of its two
LoRA sources per group of 2 layers (4 weights in [0, 1.5]), greedy generation on the 24
search prompts and its three local judges (style + facts + fluency/100, at most 3.0).
Every trial goes through the search's own evaluator
(:class:`evomerge.search.PipelineEvaluator`, via the demo's
:class:`evomerge.demo.baselines.SplitScorer`: merge engine, ``hf`` generator, judges),
called in this process from an Optuna ask/tell loop, so Ray's overhead is left out
(``benchmarks/scaling.py`` measures it). Each sampler is built as the search builds it
(``make_sampler`` with the demo's ``search:`` section, CMA-ES population 8) and starts, as
the driver does, with the start point (every weight 0.75) as trial 0.

Methods, all with the same trial budget ``--budget``:

- ``cmaes``, ``tpe``, ``random``: one run per seed (``--seeds``); the sampler's seed is the
  run's seed, the models (the demo's, seed 0) and prompts are the same for every run;
- ``uniform_grid``: the demo's uniform-weight baseline (one task-arithmetic weight per
  source, the same in every layer), k values per source over the weight bounds with
  k^2 <= budget; deterministic, so one run.

The chosen trial of a run is its best on the search prompts (``StudyView``'s rule: ties to
the lower trial number); it is then scored on the 24 held-out prompts. Reported per
method: median, min and max over seeds of the best-so-far at a few trial counts, of the
final best on the search prompts, and of the chosen trial on held-out prompts; per run the
full trace. A genome evaluated twice (deterministic greedy generation) is scored once.

``--quadratic`` runs the sampler plumbing check instead: no models, a rotated ellipsoid
with a known optimum over a ``ties_layerwise`` genome (see :func:`quadratic`); CMA-ES must
approach the optimum and beat random search, which it only does when trials are asked
and told correctly. ``--quick`` runs both at reduced size (the default test run does).

    python benchmarks/search_efficiency.py                       # demo objective, 5 seeds, budget 49
    python benchmarks/search_efficiency.py --quick               # tiny models, a minute or less
    python benchmarks/search_efficiency.py --quadratic --seeds 3 --budget 1000
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml

SAMPLERS = ("cmaes", "tpe", "random")


# --- the demo objective ------------------------------------------------------------------


class DemoObjective:
    """The demo's objective on both prompt splits, through the search's own evaluator.

    Built from ``demo_run_config`` (the demo's run.yaml) on the demo's cached models.
    ``search(x)`` / ``heldout(x)`` score genome ``x`` of the demo's search space;
    identical genomes are scored once per split (generation is greedy: same answers).
    """

    def __init__(self, size: str, cache_dir: Path | None, workdir: Path) -> None:
        from evomerge.config import load_run_config
        from evomerge.demo import SIZES, build_demo_models, default_cache_dir
        from evomerge.demo.baselines import SplitScorer
        from evomerge.demo.run import demo_run_config
        from evomerge.run import build_space, open_pool

        # the demo's own cache for its full size; a folder per other size (not to replace it)
        cache = cache_dir or (default_cache_dir() if size == "full" else default_cache_dir() / size)
        t0 = time.perf_counter()
        self.models = build_demo_models(cache, size=SIZES[size], progress=False)
        self.build_s = time.perf_counter() - t0
        path = workdir / "demo_run.yaml"
        path.write_text(yaml.safe_dump(demo_run_config(self.models, trials=1), allow_unicode=True))
        self.config = load_run_config(path)
        self.pool = open_pool(self.config)
        self.space = build_space(self.config, self.pool)
        t0 = time.perf_counter()
        self.scorers = {split: SplitScorer(self.config, split) for split in ("search", "heldout")}
        self.setup_s = time.perf_counter() - t0
        self._memo: dict[tuple[str, tuple[float, ...]], float] = {}
        self.evaluations = 0
        self.eval_s = 0.0

    def _score(self, split: str, x: np.ndarray) -> float:
        key = (split, tuple(float(v) for v in x))
        if key not in self._memo:
            t0 = time.perf_counter()
            self._memo[key] = self.scorers[split](split, self.space.decode(x)).value
            self.eval_s += time.perf_counter() - t0
            self.evaluations += 1
        return self._memo[key]

    def search(self, x: np.ndarray) -> float:
        return self._score("search", x)

    def heldout(self, x: np.ndarray) -> float:
        return self._score("heldout", x)

    def recipe_value(self, split: str, recipe: Any) -> float:
        t0 = time.perf_counter()
        value = self.scorers[split](split, recipe).value
        self.eval_s += time.perf_counter() - t0
        self.evaluations += 1
        return value

    def close(self) -> None:
        for s in self.scorers.values():
            s.close()


def _best_so_far(values: list[float]) -> list[float]:
    return [max(values[: i + 1]) for i in range(len(values))]


def run_sampler(obj: DemoObjective, name: str, seed: int, budget: int) -> dict[str, Any]:
    """One search of ``budget`` trials with sampler ``name`` seeded ``seed``, start point first."""
    from evomerge.run import StudyView
    from evomerge.search import distributions, make_sampler

    t0 = time.perf_counter()
    cfg = obj.config.search.model_copy(update={"sampler": name, "seed": seed})
    study = optuna.create_study(
        direction="maximize", sampler=make_sampler(cfg, n_objectives=1, seed=seed)
    )
    space = obj.space
    study.enqueue_trial(space.to_params(space.x0()))
    dists = distributions(space)
    values = []
    for _ in range(budget):
        trial = study.ask(dists)
        value = obj.search(space.from_params(trial.params))
        study.tell(trial, value)
        values.append(value)
    best = StudyView(study).best()
    assert best is not None
    genome = space.from_params(best.params)
    return {
        "seed": seed,
        "values": [round(v, 6) for v in values],
        "best_so_far": [round(v, 6) for v in _best_so_far(values)],
        "chosen_trial": best.number,
        "chosen_genome": {k: round(v, 4) for k, v in best.params.items()},
        "chosen_search": round(float(best.values[0]), 6),
        "chosen_heldout": round(obj.heldout(genome), 6),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def grid_size(budget: int, n_sources: int) -> int:
    """Values per source of the largest grid with at most ``budget`` points (>= 2)."""
    k = math.floor(budget ** (1.0 / n_sources) + 1e-9)
    while k**n_sources > budget:
        k -= 1
    if k < 2:
        raise SystemExit(f"--budget {budget}: the uniform grid needs at least 2^{n_sources} trials")
    return k


def run_grid(obj: DemoObjective, budget: int) -> dict[str, Any]:
    """The demo's uniform-weight grid baseline with at most ``budget`` points."""
    from evomerge.demo.baselines import best_uniform, grid_values, uniform_recipe

    t0 = time.perf_counter()
    names = list(obj.pool.source_names)
    low = min(d.bounds.low for d in obj.space.dimensions)
    high = max(d.bounds.high for d in obj.space.dimensions)
    k = grid_size(budget, len(names))
    values = grid_values(low, high, (high - low) / (k - 1))
    assert len(values) == k, values
    base = str(obj.models.base)
    result = best_uniform(obj.scorers["search"], obj.pool, base, values)
    obj.evaluations += len(result.grid)
    heldout = obj.recipe_value("heldout", uniform_recipe(obj.pool, base, result.weights))
    trace = [float(p["value"]) for p in result.grid]
    return {
        "seed": None,
        "values": [round(v, 6) for v in trace],
        "best_so_far": [round(v, 6) for v in _best_so_far(trace)],
        "chosen_trial": trace.index(max(trace)),
        "chosen_genome": result.weights,
        "chosen_search": round(result.scored.value, 6),
        "chosen_heldout": round(heldout, 6),
        "grid_values": values,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _spread(xs: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(xs), 4),
        "min": round(min(xs), 4),
        "max": round(max(xs), 4),
    }


def summarize(runs: list[dict[str, Any]], budget: int) -> dict[str, Any]:
    """Median and spread over runs: best-so-far at a few trial counts, final best, held-out."""
    n = min(len(r["best_so_far"]) for r in runs)
    at = sorted({t for t in (1, budget // 4, budget // 2, 3 * budget // 4, budget) if 1 <= t <= n})
    return {
        "trials": n,
        "best_so_far": {str(t): _spread([r["best_so_far"][t - 1] for r in runs]) for t in at},
        "search_best": _spread([r["chosen_search"] for r in runs]),
        "heldout_chosen": _spread([r["chosen_heldout"] for r in runs]),
        "runs": runs,
    }


def demo_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    from evomerge.demo import objective_max
    from evomerge.demo.baselines import source_recipe

    with tempfile.TemporaryDirectory(prefix="evbench-eff") as tmp:
        obj = DemoObjective(args.size, args.cache_dir, Path(tmp))
        try:
            t0 = time.perf_counter()
            x0 = obj.space.x0()
            base = str(obj.models.base)
            baselines = {
                "start": {"search": obj.search(x0), "heldout": obj.heldout(x0)},
                **{
                    f"source {n}": {
                        split: obj.recipe_value(split, source_recipe(obj.pool, base, n))
                        for split in ("search", "heldout")
                    }
                    for n in obj.pool.source_names
                },
            }
            methods: dict[str, Any] = {}
            for name in args.samplers:
                runs = []
                for seed in args.seeds:
                    runs.append(run_sampler(obj, name, seed, args.budget))
                    logging.info("%s seed %d: %s", name, seed, runs[-1]["chosen_search"])
                methods[name] = summarize(runs, args.budget)
            if not args.no_grid:
                methods["uniform_grid"] = summarize([run_grid(obj, args.budget)], args.budget)
            loop_s = time.perf_counter() - t0
        finally:
            obj.close()
    return {
        "objective": "demo: style + facts + fluency/100 (search prompts), greedy hf generation",
        "objective_max": objective_max(),
        "size": args.size,
        "space": {
            "name": obj.space.spec.name,
            "dimensions": obj.space.dim,
            "genes": obj.space.names_in_order,
        },
        "budget": args.budget,
        "seeds": args.seeds,
        "baselines": {k: {s: round(v, 6) for s, v in d.items()} for k, d in baselines.items()},
        "methods": methods,
        "evaluations": obj.evaluations,
        "seconds_per_evaluation": round(obj.eval_s / max(obj.evaluations, 1), 4),
        "timing_s": {
            "build_models": round(obj.build_s, 1),
            "evaluator_setup": round(obj.setup_s, 1),
            "runs": round(loop_s, 1),
        },
    }


# --- the quadratic: a plumbing check of the samplers --------------------------------------


class Quadratic:
    """``q(x) = 1 - d(x)/d(x0)``, ``d(x) = z^T A z``, ``z = (x - x*) / (high - low)``: ``A`` a
    random rotation of a diagonal with condition number ``condition``, ``x*`` drawn inside
    the bounds; q(start point) = 0, q(x*) = 1."""

    def __init__(self, space: Any, *, seed: int, condition: float) -> None:
        rng = np.random.default_rng(seed)
        d = space.dim
        self.lo, self.range = space.lower, space.upper - space.lower
        self.x_star = self.lo + self.range * rng.uniform(0.15, 0.85, size=d)
        q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        self.a = q @ np.diag(condition ** (np.arange(d) / max(d - 1, 1))) @ q.T
        self.d0 = self._d(space.x0())

    def _d(self, x: np.ndarray) -> float:
        z = (x - self.x_star) / self.range
        return float(z @ self.a @ z)

    def __call__(self, x: np.ndarray) -> float:
        return 1.0 - self._d(x) / self.d0


def quadratic(args: argparse.Namespace) -> dict[str, Any]:
    """Each sampler as the driver drives it (start point first, ask/tell, one worker) on
    :class:`Quadratic` over ``ties_layerwise`` (``groups`` x ``sources`` x 2 dimensions):
    evaluations to reach ``target``, and the best q at the end."""
    from evomerge.config import SearchConfig
    from evomerge.search import distributions, make_sampler
    from evomerge.space import SearchSpace, load_space_spec

    spec = load_space_spec("ties_layerwise", overrides={"layer_granularity": 4})
    space = SearchSpace(
        spec=spec,
        num_layers=args.groups * 4,
        base="/base",
        sources=[f"/src{i}" for i in range(args.sources)],
    )
    results: dict[str, Any] = {}
    for name in args.samplers:
        runs = []
        for seed in args.seeds:
            objective = Quadratic(space, seed=1000 + seed, condition=args.condition)
            sampler = make_sampler(SearchConfig(sampler=name, seed=seed), n_objectives=1, seed=seed)
            study = optuna.create_study(direction="maximize", sampler=sampler)
            study.enqueue_trial(space.to_params(space.x0()))
            dists = distributions(space)
            best, reached, t0 = -math.inf, None, time.perf_counter()
            for n in range(1, args.budget + 1):
                trial = study.ask(dists)
                value = objective(space.from_params(trial.params))
                study.tell(trial, value)
                best = max(best, value)
                if best >= args.target:
                    reached = n
                    break
            runs.append(
                {
                    "evaluations": reached,
                    "best_q": round(best, 4),
                    "seconds": round(time.perf_counter() - t0, 2),
                }
            )
        needed = [r["evaluations"] for r in runs]
        done = sorted(n for n in needed if n is not None)
        median = statistics.median(done + [math.inf] * (len(needed) - len(done)))
        results[name] = {
            "evaluations_per_seed": needed,
            "median_evaluations": None if median == math.inf else median,
            "best_q_per_seed": [r["best_q"] for r in runs],
            "seconds_per_seed": [r["seconds"] for r in runs],
        }
    return {
        "objective": f"1 - d(x)/d(x0), rotated ellipsoid, condition {args.condition:g}",
        "space": {
            "name": "ties_layerwise",
            "groups": args.groups,
            "sources": args.sources,
            "dimensions": space.dim,
        },
        "target": args.target,
        "budget": args.budget,
        "seeds": args.seeds,
        "results": results,
    }


# --- command line -------------------------------------------------------------------------


def _machine() -> dict[str, Any]:
    import torch

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "optuna": optuna.__version__,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    p.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="sampler seeds (default 0..4)"
    )
    p.add_argument(
        "--budget",
        type=int,
        default=None,
        help="trials per run (default 49: the demo's 7 x 7 grid)",
    )
    p.add_argument("--size", choices=["full", "small", "tiny"], default="full", help="demo models")
    p.add_argument(
        "--cache-dir", type=Path, default=None, help="demo models (default: the demo's cache)"
    )
    p.add_argument("--no-grid", action="store_true", help="leave out the uniform grid")
    p.add_argument(
        "--quick", action="store_true", help="tiny models, 2 seeds, 6 trials; small quadratic"
    )
    p.add_argument("--quadratic", action="store_true", help="the sampler plumbing check only")
    p.add_argument("--target", type=float, default=0.95, help="quadratic: q to reach")
    p.add_argument("--condition", type=float, default=10.0, help="quadratic: condition number")
    p.add_argument("--groups", type=int, default=8, help="quadratic: layer groups")
    p.add_argument("--sources", type=int, default=3, help="quadratic: sources")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = datetime.datetime.now(datetime.timezone.utc)
    t0, load0 = time.perf_counter(), os.getloadavg()
    out: dict[str, Any] = {
        "benchmark": "search_efficiency",
        "date": started.isoformat(timespec="seconds"),
    }
    if args.quadratic:
        args.seeds = args.seeds or [0, 1, 2, 3, 4]
        args.budget = args.budget or 600
        out["quadratic"] = quadratic(args)
    else:
        if args.quick:
            args.size, args.seeds, args.budget = "tiny", args.seeds or [0, 1], args.budget or 6
        args.seeds = args.seeds or [0, 1, 2, 3, 4]
        args.budget = args.budget or 49
        out["demo"] = demo_benchmark(args)
        if args.quick:  # the plumbing check at reduced size: 12 dimensions
            qargs = argparse.Namespace(**vars(args))
            qargs.samplers, qargs.seeds, qargs.budget, qargs.groups = (
                ["cmaes", "random"],
                [0, 1],
                150,
                2,
            )
            out["quadratic"] = quadratic(qargs)
    out["machine"] = _machine()
    out["load_average"] = {
        "start": [round(v, 2) for v in load0],
        "end": [round(v, 2) for v in os.getloadavg()],
    }
    out["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
