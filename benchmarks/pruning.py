"""Early stopping of hopeless trials (``search.pruning``) on the demo's real objective.

For each seed, runs the demo's search (:func:`evomerge.demo.demo_run_config`: CMA-ES over
per-layer-group task-arithmetic weights of the demo's two LoRA sources, the ``hf``
generator, the style + facts + fluency judges; one Ray worker) twice, with pruning off and
on, the same trial budget and seed. The peer of each pruned run is the unpruned run of the
same seed, measured in the same process. Reported per run: prompts generated and judged
(per trial and in all), complete / pruned trials, the best value on the search prompts,
the best trial's score on the demo's held-out prompts (scored afterwards with the same
generator and judges, all 24 prompts), the search's wall seconds (worker start-up
included) and the driver loop's seconds (``loop_s``: trials over trials per hour, start-up
excluded; under load, compare ratios). The demo's models are built once (``--size``,
model seed 0) and shared by every run: the seeds vary the search only. Prints one JSON
object (and writes it to ``--out`` after every run, so a cut-short run keeps its part).

    python benchmarks/pruning.py                       # 3 seeds, 32 trials each
    python benchmarks/pruning.py --seeds 0 --trials 16 # quick
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml


def _run(
    models: Any, seed: int, trials: int, pruning: dict[str, Any], root: Path
) -> dict[str, Any]:
    from evomerge.config import load_run_config
    from evomerge.demo.baselines import SplitScorer
    from evomerge.demo.run import demo_run_config
    from evomerge.run import attrs as A
    from evomerge.run import open_run
    from evomerge.search import run_search

    data = demo_run_config(models, trials=trials, seed=seed)
    data["search"]["pruning"] = pruning
    data["analysis"] = {"top_k": 0, "report": False}
    tag = "on" if pruning.get("enabled") else "off"
    cfg_path = root / f"s{seed}_{tag}" / "run.yaml"
    cfg_path.parent.mkdir(parents=True)
    cfg_path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    t0 = time.perf_counter()
    summary = run_search(cfg_path, run_dir=cfg_path.parent / "run", progress=False)
    search_s = time.perf_counter() - t0
    run = open_run(cfg_path.parent / "run")
    view = run.study
    config = load_run_config(cfg_path)
    n_prompts = sum(
        1
        for line in Path(config.generation.prompts).read_text("utf-8").splitlines()
        if line.strip()
    )  # type: ignore[union-attr]
    used = []
    for t in view.trials():
        if t.state.name not in ("COMPLETE", "PRUNED"):
            continue
        scores = t.user_attrs.get(A.PROMPT_SCORES)
        used.append(len(scores) if scores is not None else n_prompts)
    best = view.best()
    assert best is not None
    heldout = SplitScorer(config, "heldout")
    try:
        held = heldout("best", view.recipe(best)).values[0]
    finally:
        heldout.close()
    counts = view.counts()
    return {
        "seed": seed,
        "pruning": tag,
        "trials": counts.finished,
        "complete": counts.complete,
        "pruned": counts.pruned,
        "failed": counts.failed,
        "prompts_total": sum(used),
        "prompts_per_trial": sum(used) / max(len(used), 1),
        "prompts_per_pruned_trial": (
            statistics.mean(u for u in used if u < n_prompts) if counts.pruned else None
        ),
        "best_search": float(best.values[0]),
        "best_trial": best.number,
        "heldout_best": float(held),
        "search_s": round(search_s, 1),
        "trials_per_hour": round(summary.trials_per_hour, 1),
        # the driver's loop alone (worker start-up excluded): trials / trials per second
        "loop_s": round(3600 * counts.finished / max(summary.trials_per_hour, 1e-9), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--trials", type=int, default=32)
    ap.add_argument("--size", default="full", choices=["full", "small", "tiny"])
    ap.add_argument("--chunk-size", type=int, default=4)
    ap.add_argument("--p-threshold", type=float, default=0.1)
    ap.add_argument("--n-startup-steps", type=int, default=4)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import dataclasses

    import evomerge
    from evomerge.demo.models import SIZES, build_demo_models, default_cache_dir

    t0 = time.perf_counter()
    models = build_demo_models(
        default_cache_dir(), size=dataclasses.replace(SIZES[args.size], seed=0), progress=False
    )
    build_s = time.perf_counter() - t0
    pruning = {
        "enabled": True,
        "chunk_size": args.chunk_size,
        "p_threshold": args.p_threshold,
        "n_startup_steps": args.n_startup_steps,
    }
    out: dict[str, Any] = {
        "benchmark": "pruning",
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_avg_start": os.getloadavg(),
        },
        "evomerge": getattr(evomerge, "__version__", "dev"),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "size": args.size,
        "trials": args.trials,
        "pruning": pruning,
        "model_build_s": round(build_s, 1),
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="evprune") as tmp:
        for seed in args.seeds:
            for setting in ({"enabled": False}, pruning):
                out["runs"].append(_run(models, seed, args.trials, setting, Path(tmp)))
                if args.out is not None:
                    args.out.write_text(json.dumps(out, indent=2), encoding="utf-8")
    out["machine"]["load_avg_end"] = os.getloadavg()
    out["summary"] = _summary(out["runs"])
    text = json.dumps(out, indent=2)
    if args.out is not None:
        args.out.write_text(text, encoding="utf-8")
    print(text)


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    off = {r["seed"]: r for r in runs if r["pruning"] == "off"}
    on = {r["seed"]: r for r in runs if r["pruning"] == "on"}
    seeds = sorted(set(off) & set(on))
    if not seeds:
        return {}

    def spread(xs: list[float]) -> dict[str, float]:
        return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}

    saved = [1 - on[s]["prompts_total"] / off[s]["prompts_total"] for s in seeds]
    return {
        "seeds": seeds,
        "prompt_evaluations_saved": spread(saved),
        "prompts_per_trial": {
            "off": spread([off[s]["prompts_per_trial"] for s in seeds]),
            "on": spread([on[s]["prompts_per_trial"] for s in seeds]),
        },
        "heldout_best": {
            "off": spread([off[s]["heldout_best"] for s in seeds]),
            "on": spread([on[s]["heldout_best"] for s in seeds]),
        },
        "best_search": {
            "off": spread([off[s]["best_search"] for s in seeds]),
            "on": spread([on[s]["best_search"] for s in seeds]),
        },
        "search_s_ratio_on_over_off": spread(
            [on[s]["search_s"] / off[s]["search_s"] for s in seeds]
        ),
        "loop_s_ratio_on_over_off": spread([on[s]["loop_s"] / off[s]["loop_s"] for s in seeds]),
        "heldout_on_minus_off": spread(
            [on[s]["heldout_best"] - off[s]["heldout_best"] for s in seeds]
        ),
    }


if __name__ == "__main__":
    main()
