"""Judging overlapped with generation: trials per hour with ``search.overlap_judging`` off
(each worker merges, generates, then waits for its judge) and on (it merges and generates
the next trial while the previous one is judged).

The real pipeline on one Ray worker: merges of tiny llama models by the MergeEngine, hf
generation of ``--prompts`` answers, and an LLM judge over real HTTP: the project's
OpenAI-compatible test server on 127.0.0.1 answering each request after a latency drawn
uniformly from ``--latency`` (0.5-2 s), all of a trial's requests at once. The judge time
of a trial is then about the largest of its draws; ``--max-new-tokens auto`` sizes the
answers so that generation takes about as long as the judging measured in a short
sequential probe run (medians over its trials after the first; client and server
overheads included). Both
modes run in the same process on the same Ray cluster with the same models, prompts,
sampler and seed; each search's worker start-up is reported apart from its search loop
(trials per hour count from the first dispatch). ``accelerator_busy``: the share of the
search loop spent merging and generating (idle while the worker waits for its judge). The
modes alternate, sequential,
overlapped, overlapped, sequential (``--rounds`` searches each), so that a load that drifts
during the run weighs on both alike. Prints one JSON object.

    python benchmarks/overlap.py          # 2 searches of 8 trials per mode (ABBA order)
    python benchmarks/overlap.py --rounds 1 --trials 4 --max-new-tokens 40   # quick
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

JUDGE_YAML = """\
system_prompt: You rate answers.
user_template: "Question: {question}\\nAnswer: {answer}\\nScore 1-7 on the last line."
scale: {min: 1, max: 7}
parsing: last_line_integer
max_tokens: 8
"""

QUESTIONS = [
    "Tell me about the sea.",
    "What is your favourite book?",
    "Describe a quiet morning.",
    "How do trains work?",
    "Why is the sky blue?",
    "Name three fruits.",
    "What makes a good friend?",
    "Explain rain to a child.",
]


def build_models(root: Path) -> dict[str, Path]:
    from evomerge.testing.tiny import VLLM_CPU_KWARGS, build_tiny_model, perturb_model

    base = build_tiny_model(root / "base", seed=0, num_layers=4, **VLLM_CPU_KWARGS)
    return {
        "base": base,
        "ft_a": perturb_model(base, root / "ft_a", seed=1, scale=0.3),
        "ft_b": perturb_model(base, root / "ft_b", seed=2, scale=0.3),
    }


def run_config(
    root: Path,
    models: dict[str, Path],
    url: str,
    args: argparse.Namespace,
    *,
    name: str,
    overlap: bool,
    trials: int,
    max_new_tokens: int,
) -> Path:
    prompts = root / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"question": q}) + "\n" for q in QUESTIONS[: args.prompts]),
        encoding="utf-8",
    )
    (root / "judges").mkdir(exist_ok=True)
    (root / "judges" / "rater.yaml").write_text(JUDGE_YAML, encoding="utf-8")
    data = {
        "name": name,
        "models": {
            "base": str(models["base"]),
            "sources": [str(models["ft_a"]), str(models["ft_b"])],
            "names": ["ft_a", "ft_b"],
        },
        "space": "linear_layerwise",
        "space_overrides": {"layer_granularity": 2},
        "search": {
            "sampler": "cmaes",
            "n_trials": trials,
            "population_size": 4,
            "seed": 0,
            "overlap_judging": overlap,
        },
        "merge": {"device": "cpu", "cache": False},
        "generation": {
            "prompts": str(prompts),
            "template": "{question}",
            "params": {"max_new_tokens": max_new_tokens, "batch_size": args.prompts},
            "dtype": "float32",
        },
        "judging": {
            "cache": False,  # every trial asks the endpoint
            "judges_dirs": [str(root / "judges")],
            "judges": {
                "rater": {"type": "rater", "endpoint": url, "model": "m", "max_concurrency": 16}
            },
        },
        "workers": {"num": 1, "device": "cpu", "cpus_per_worker": args.cpus_per_worker},
        "analysis": {"top_k": 0, "report": False},
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def stage_times(run_dir: Path) -> dict[str, list[float]]:
    """Seconds per stage of the run's complete trials, in trial order (stored timings)."""
    from optuna.trial import TrialState

    from evomerge.run import open_run

    trials = [t for t in open_run(run_dir).study.study.trials if t.state == TrialState.COMPLETE]
    out: dict[str, list[float]] = {}
    for k in ("merge_s", "generate_s", "judge_s", "wait_s", "total_s"):
        vals = [t.user_attrs["timings"][k] for t in trials if k in t.user_attrs["timings"]]
        if vals:
            out[k] = vals
    return out


def search(path: Path, run_dir: Path) -> dict[str, Any]:
    from evomerge.search import run_search

    t0 = time.perf_counter()
    s = run_search(path, run_dir=run_dir, progress=False)
    wall = time.perf_counter() - t0
    finished = s.n_complete + s.n_failed
    times = stage_times(run_dir)
    loop_s = finished * 3600 / s.trials_per_hour  # first dispatch to last tell
    return {
        "trials": finished,
        "failed": s.n_failed,
        "wall_s": round(wall, 2),
        "search_loop_s": round(loop_s, 2),
        "startup_s": round(wall - loop_s, 2),
        "trials_per_hour": round(s.trials_per_hour, 1),
        "stage_means_s": {k: round(statistics.mean(v), 3) for k, v in times.items()},
        "_times": times,
    }


def busy_fraction(trials: int, loop_s: float, merge_s: float, generate_s: float) -> float:
    """The share of the search loop the accelerator worked (merge + generation): less
    sensitive than trials/hour to a CPU load that slows generation during one search."""
    return round(trials * (merge_s + generate_s) / loop_s, 3)


def expected_judge_s(lo: float, hi: float, n: int) -> float:
    """E[max of n uniform(lo, hi) draws]: a trial's judge time when all n run at once."""
    return lo + (hi - lo) * n / (n + 1)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--trials", type=int, default=8, help="trials per search")
    p.add_argument("--rounds", type=int, default=2, help="searches per mode, in the order ABBA...")
    p.add_argument("--prompts", type=int, default=4, choices=range(1, len(QUESTIONS) + 1))
    p.add_argument("--latency", type=float, nargs=2, default=[0.5, 2.0], metavar=("LO", "HI"))
    p.add_argument("--max-new-tokens", default="auto", help="an int, or auto (probe run)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import optuna
    import ray

    from evomerge.testing.openai_server import FakeOpenAIServer

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    lo, hi = args.latency
    judge_target = expected_judge_s(lo, hi, args.prompts)
    out: dict[str, Any] = {
        "benchmark": "overlap",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "load_avg_before": [round(x, 2) for x in os.getloadavg()],
        "trials_per_search": args.trials,
        "rounds": args.rounds,
        "prompts_per_trial": args.prompts,
        "latency_s": [lo, hi],
        "expected_judge_s": round(judge_target, 3),
    }
    with tempfile.TemporaryDirectory(prefix="evoverlap") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        models = build_models(root / "models")
        out["models_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        ray.init(
            num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False
        )
        out["ray_start_s"] = round(time.perf_counter() - t0, 2)
        with FakeOpenAIServer(reply="Fine.\n5", latency=(lo, hi), latency_seed=0) as server:
            try:
                if args.max_new_tokens == "auto":
                    probe_tokens = 32
                    path = run_config(
                        root,
                        models,
                        server.url,
                        args,
                        name="probe",
                        overlap=False,
                        trials=4,
                        max_new_tokens=probe_tokens,
                    )
                    probe = search(path, root / "rd_probe")
                    times = probe.pop("_times")
                    # the first trial warms up (connections, kernels): leave it out
                    per_token = statistics.median(times["generate_s"][1:]) / probe_tokens
                    want = statistics.median(times["judge_s"][1:]) - statistics.median(
                        times["merge_s"][1:]
                    )
                    tokens = min(int(max(8, want / per_token)), 200)  # 256 positions
                    out["probe"] = {**probe, "max_new_tokens": probe_tokens}
                else:
                    tokens = int(args.max_new_tokens)
                out["max_new_tokens"] = tokens
                runs: list[dict[str, Any]] = []
                # ABBA...: load that drifts during the benchmark falls on both modes alike
                order = [i % 4 in (1, 2) for i in range(2 * args.rounds)]
                for i, overlap in enumerate(order):
                    name = f"{'overlapped' if overlap else 'sequential'}{i}"
                    path = run_config(
                        root,
                        models,
                        server.url,
                        args,
                        name=name,
                        overlap=overlap,
                        trials=args.trials,
                        max_new_tokens=tokens,
                    )
                    server.reset_counters()
                    run = {"mode": name[:-1], **search(path, root / f"rd_{name}")}
                    run.pop("_times")
                    run["judge_requests"] = server.request_count
                    run["max_requests_in_flight"] = server.max_in_flight
                    runs.append(run)
            finally:
                ray.shutdown()
    out["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    out["runs"] = runs
    modes: dict[str, dict[str, Any]] = {}
    for mode in ("sequential", "overlapped"):
        mine = [r for r in runs if r["mode"] == mode]
        trials = sum(r["trials"] for r in mine)
        loop_s = sum(r["search_loop_s"] for r in mine)
        modes[mode] = {
            "trials": trials,
            "search_loop_s": round(loop_s, 2),
            "trials_per_hour": round(3600 * trials / loop_s, 1),
            "startup_s_mean": round(statistics.mean(r["startup_s"] for r in mine), 2),
            **{
                k: round(statistics.mean(r["stage_means_s"][k] for r in mine), 3)
                for k in ("merge_s", "generate_s", "judge_s")
            },
        }
    for m in modes.values():
        m["accelerator_busy"] = busy_fraction(
            m["trials"], m["search_loop_s"], m["merge_s"], m["generate_s"]
        )
    out["modes"] = modes
    seq = modes["sequential"]
    busy = seq["generate_s"] + seq["merge_s"]
    out["judge_over_generation"] = round(seq["judge_s"] / busy, 3)
    # the most overlap can give: a trial costs max(generation, judging) instead of the sum
    out["ideal_speedup"] = round((busy + seq["judge_s"]) / max(busy, seq["judge_s"]), 3)
    out["busy_gain"] = round(modes["overlapped"]["accelerator_busy"] / seq["accelerator_busy"], 3)
    out["speedup"] = round(modes["overlapped"]["trials_per_hour"] / seq["trials_per_hour"], 3)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
