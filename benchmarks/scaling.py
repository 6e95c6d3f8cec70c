"""Search scaling: trials per hour with 1 and 2 workers on this machine, and the driver's
overhead per trial.

Runs the real driver (``run_search``) on a local Ray cluster over tiny models, with an
evaluator that takes a fixed time per trial (``--trial-s``, simulated work that does not
compete for the CPU, as a GPU-bound trial would not) or, with ``--evaluator weights``,
real merges by the MergeEngine. For each worker count it reports the trials per hour of
the search loop (from the first dispatch; worker start-up excluded and reported apart),
the ideal rate ``workers * 3600 / trial_s``, the efficiency against it, and the driver's
mean seconds per trial spent asking, decoding and telling (optuna + journal writes). The
genome is realistic in size: ``ties_layerwise`` over 32 layers in groups of 4 and 3 sources
(48 dimensions). Prints one JSON object.

    python benchmarks/scaling.py                      # 40 trials of 0.5 s, workers 1 and 2
    python benchmarks/scaling.py --trials 16 --trial-s 0.2   # quick
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml


def build_models(root: Path, layers: int, sources: int) -> dict[str, Any]:
    from evomerge.testing.tiny import build_tiny_model, perturb_model

    base = build_tiny_model(root / "base", seed=0, num_layers=layers)
    return {
        "base": base,
        "sources": [perturb_model(base, root / f"ft{i}", seed=i + 1) for i in range(sources)],
    }


def run_config(models: dict[str, Any], args: argparse.Namespace, workers: int) -> dict[str, Any]:
    if args.evaluator == "weights":
        evaluator = {"factory": "evomerge.testing.search:weight_distance_evaluator", "options": {}}
    else:
        evaluator = {
            "factory": "evomerge.testing.search:quadratic_evaluator",
            "options": {"sleep_s": args.trial_s},
        }
    return {
        "name": f"scaling{workers}",
        "models": {"base": str(models["base"]), "sources": [str(s) for s in models["sources"]]},
        "space": "ties_layerwise",
        "space_overrides": {"layer_granularity": 4},
        "search": {"sampler": "cmaes", "n_trials": args.trials, "seed": 0},
        "evaluator": evaluator,
        "workers": {"num": workers, "cpus_per_worker": 2 / max(args.workers)},
        "analysis": {"top_k": 0, "report": False},
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--trial-s", type=float, default=0.5)
    p.add_argument("--evaluator", choices=["sleep", "weights"], default="sleep")
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--sources", type=int, default=3)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import optuna
    import ray

    from evomerge.search import run_search

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results = []
    with tempfile.TemporaryDirectory(prefix="evbench") as tmp:
        root = Path(tmp)
        models = build_models(root / "models", args.layers, args.sources)
        t0 = time.perf_counter()
        ray.init(
            num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False
        )
        ray_start_s = time.perf_counter() - t0
        try:
            for n in args.workers:
                path = root / f"run{n}.yaml"
                path.write_text(yaml.safe_dump(run_config(models, args, n)))
                t1 = time.perf_counter()
                s = run_search(path, run_dir=root / f"rd{n}", progress=False)
                wall = time.perf_counter() - t1
                ideal = n * 3600 / args.trial_s if args.evaluator == "sleep" else None
                finished = s.n_complete + s.n_failed
                loop_s = (
                    finished * 3600 / s.trials_per_hour
                )  # from the first dispatch to the last tell
                results.append(
                    {
                        "workers": n,
                        "trials": finished,
                        "wall_s": round(wall, 2),
                        "search_loop_s": round(loop_s, 2),
                        "startup_s": round(wall - loop_s, 2),
                        "trials_per_hour": round(s.trials_per_hour),
                        "ideal_trials_per_hour": None if ideal is None else round(ideal),
                        "efficiency": None
                        if ideal is None
                        else round(s.trials_per_hour / ideal, 3),
                        "driver_overhead_s_per_trial": round(s.driver_overhead_s, 4),
                    }
                )
        finally:
            ray.shutdown()
    base = results[0]["trials_per_hour"] if results else 0
    for r in results:
        r["speedup_vs_first"] = round(r["trials_per_hour"] / base, 3) if base else None
    print(
        json.dumps(
            {
                "benchmark": "scaling",
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "machine": platform.platform(),
                "cpus": os.cpu_count(),
                "evaluator": args.evaluator,
                "trial_s": args.trial_s if args.evaluator == "sleep" else None,
                "space": {
                    "name": "ties_layerwise",
                    "layers": args.layers,
                    "granularity": 4,
                    "sources": args.sources,
                },
                "ray_start_s": round(ray_start_s, 2),
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
