"""Search efficiency: evaluations to reach 95% of a known optimum, CMA-ES vs TPE vs random.

The space is realistic: ``ties_layerwise`` over 32 layers in groups of 4 (8 groups) and
3 source models, i.e. 8 x 3 x 2 = 48 dimensions (weight and density). The objective is a
synthetic function of the genome with a known optimum ``x*`` (drawn inside the bounds):

    q(x) = 1 - d(x) / d(x0),   d(x) = z^T A z,   z = (x - x*) / (high - low)

with ``A`` a random rotation of a diagonal with condition number ``--condition`` (coupled
dimensions, as merge weights are), ``x0`` the search's start point (equal weights, middle
of the bounds): q(x0) = 0, q(x*) = 1. Each sampler runs exactly as the driver drives it:
evomerge's sampler factory, the start point enqueued first, ask/tell on optuna's
in-memory storage (sequential: one worker). A run stops at q >= ``--target`` (0.95) or
after ``--budget`` evaluations. Prints one JSON object with, per sampler, the evaluations
needed for each seed (null: not reached within the budget), their median (null when more
than half did not reach it) and the best q at the end.

    python benchmarks/search_efficiency.py                     # 5 seeds, budget 600
    python benchmarks/search_efficiency.py --seeds 2 --budget 200 --samplers cmaes random   # quick
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time
from typing import Any

import numpy as np
import optuna

from evomerge.config import SearchConfig
from evomerge.search import distributions, make_sampler
from evomerge.space import SearchSpace, load_space_spec


def build_space(groups: int, granularity: int, sources: int) -> SearchSpace:
    spec = load_space_spec("ties_layerwise", overrides={"layer_granularity": granularity})
    return SearchSpace(
        spec=spec,
        num_layers=groups * granularity,
        base="/base",
        sources=[f"/src{i}" for i in range(sources)],
    )


class Objective:
    """The rotated ellipsoid of the module docstring, scaled so that q(x0) = 0, q(x*) = 1."""

    def __init__(self, space: SearchSpace, *, seed: int, condition: float) -> None:
        rng = np.random.default_rng(seed)
        d = space.dim
        self.lo, self.range = space.lower, space.upper - space.lower
        self.x_star = self.lo + self.range * rng.uniform(0.15, 0.85, size=d)
        q, _ = np.linalg.qr(rng.normal(size=(d, d)))  # a random rotation (d, d)
        self.a = q @ np.diag(condition ** (np.arange(d) / max(d - 1, 1))) @ q.T
        self.d0 = self._d(space.x0())

    def _d(self, x: np.ndarray) -> float:
        z = (x - self.x_star) / self.range
        return float(z @ self.a @ z)

    def __call__(self, x: np.ndarray) -> float:
        return 1.0 - self._d(x) / self.d0


def run_once(
    space: SearchSpace, sampler_name: str, seed: int, args: argparse.Namespace
) -> dict[str, Any]:
    objective = Objective(space, seed=1000 + seed, condition=args.condition)
    cfg = SearchConfig(sampler=sampler_name, seed=seed)
    study = optuna.create_study(
        direction="maximize", sampler=make_sampler(cfg, n_objectives=1, seed=seed)
    )
    study.enqueue_trial(space.to_params(space.x0()), user_attrs={"start_point": True})
    dists = distributions(space)
    best, reached = -np.inf, None
    t0 = time.perf_counter()
    for n in range(1, args.budget + 1):
        trial = study.ask(dists)
        value = objective(space.from_params(trial.params))
        study.tell(trial, value)
        best = max(best, value)
        if best >= args.target:
            reached = n
            break
    return {
        "evaluations": reached,
        "best": round(best, 4),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--samplers",
        nargs="+",
        default=["cmaes", "tpe", "random"],
        choices=["cmaes", "tpe", "random"],
    )
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--budget", type=int, default=600)
    p.add_argument("--target", type=float, default=0.95)
    p.add_argument("--condition", type=float, default=10.0)
    p.add_argument("--groups", type=int, default=8)
    p.add_argument("--granularity", type=int, default=4)
    p.add_argument("--sources", type=int, default=3)
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    space = build_space(args.groups, args.granularity, args.sources)
    results: dict[str, Any] = {}
    for name in args.samplers:
        runs = [run_once(space, name, seed, args) for seed in range(args.seeds)]
        needed = [r["evaluations"] for r in runs]
        reached = sorted(n for n in needed if n is not None)
        median = statistics.median(reached + [float("inf")] * (len(needed) - len(reached)))
        results[name] = {
            "evaluations_per_seed": needed,
            "median_evaluations": None if median == float("inf") else median,
            "reached": f"{len(reached)}/{len(needed)}",
            "best_q_per_seed": [r["best"] for r in runs],
            "seconds_per_seed": [r["seconds"] for r in runs],
        }
    print(
        json.dumps(
            {
                "benchmark": "search_efficiency",
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "machine": platform.platform(),
                "optuna": optuna.__version__,
                "space": {
                    "name": space.spec.name,
                    "layers": space.num_layers,
                    "groups": space.num_groups,
                    "sources": len(space.sources),
                    "params": list(space.spec.params),
                    "dimensions": space.dim,
                },
                "objective": f"1 - d(x)/d(x0), rotated ellipsoid, condition {args.condition:g}",
                "target": args.target,
                "budget": args.budget,
                "seeds": args.seeds,
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
