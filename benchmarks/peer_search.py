"""Side by side: evomerge vs mergekit-evolve (mergekit 0.1.5) vs Mergenetic 0.1.1.

The same models, task, trial budget and seed for every tool:

- models: a ~60M-parameter Llama-shaped base (8 layers, hidden 512, Llama's 32000-row
  vocabulary) and two full fine-tunes of it, built locally (``evomerge.demo.forgetting``,
  size ``bench60m``): ``facts`` (the demo persona's facts) and ``register``;
- task: ``bench_facts_mc``, the bundled ``persona_facts_mc`` written as a plain lm-eval task
  (``dataset_path: json``, absolute data files) so every tool's lm-eval reads it unchanged;
  ``acc`` on the first ``--limit`` documents, no few-shot, no chat template;
- genome: task arithmetic, one weight in [0, 1] per fine-tune over all layers;
- search: ``--trials`` evaluations, population ``--pop-size``, seed ``--seed`` (CMA-ES for
  evomerge and mergekit-evolve, Mergenetic's usual pymoo GA);
- dtype: bfloat16 (``--dtype``) for the merge and the evaluation: mergekit-evolve hard-codes
  it, and it is Mergenetic's own ``load_model`` dtype. On a CPU with bf16 matrix units it
  matters: at 60M a bfloat16 lm-eval pass is several times faster than a float32 one.

mergekit-evolve runs its on-disk mode with one evaluator actor and, as ``adapted_2_actors``,
with two (``--num-gpus 2`` on two logical GPUs: its own parallelism); the comparison is
against the fastest peer configuration, and n evomerge workers against n actors.

Peers run in their own venvs (``bash benchmarks/peers/setup.sh``; created on first use).
Where a peer cannot run as shipped on a CPU-only, offline machine, the stock command is run
once and where it fails is reported (command and error); then the part that does run is
measured with the smallest change that makes it run, named in the output.

Per tool: ``wall_s`` (start to budget), ``setup_s`` (start to the first trial's start, or
what the tool prints before evaluating), ``trials_per_hour`` (budget over the trial phase),
``trials_per_hour_end_to_end`` (budget over ``wall_s``) and ``best`` (best ``acc``).
Prints one JSON object. The machine is shared: compare ratios measured in the same run.

    python benchmarks/peer_search.py                         # 12 trials each, ~10 min idle
    python benchmarks/peer_search.py --trials 6 --only evomerge mergekit
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
PEERS = REPO / "benchmarks" / "peers"
MERGEKIT_VENV = REPO / ".venv-peer-mergekit"
MERGENETIC_VENV = REPO / ".venv-peer-mergenetic"
TASK = "bench_facts_mc"


def _setup_peers(needed: list[Path]) -> None:
    if not all((v / ".done").exists() for v in needed):
        subprocess.run(["bash", str(PEERS / "setup.sh")], check=True)


def _task_folder(work: Path) -> Path:
    """The bundled persona_facts_mc as a plain lm-eval task (no evomerge import needed)."""
    from evomerge.judge.harness import bundled_tasks_dir

    src = bundled_tasks_dir()
    cfg = yaml.safe_load((src / "persona_facts_mc.yaml").read_text().replace("!function ", ""))
    cfg.pop("custom_dataset")
    files = {k: str(src / v) for k, v in cfg["dataset_kwargs"]["data_files"].items()}
    cfg.update(task=TASK, dataset_path="json", dataset_kwargs={"data_files": files})
    folder = work / "tasks"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{TASK}.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False))
    return folder


def _run(
    cmd: list[str], *, log: Path, timeout: float | None = None, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``cmd`` (its own process group), timestamping each output line; on timeout send
    SIGINT, then SIGKILL, to that group only."""
    import threading

    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    lines: list[tuple[float, str]] = []
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
        env={**os.environ, **(env or {})},
        cwd=str(log.parent),
    )

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.perf_counter() - start, line.rstrip("\n")))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(10)
    log.write_text("\n".join(f"{t:9.2f} {ln}" for t, ln in lines))
    return {
        "rc": proc.returncode,
        "timed_out": timed_out,
        "wall_s": time.perf_counter() - start,
        "lines": lines,
    }


def _portable_tokenizers(models: Any) -> None:
    """Name the generic fast tokenizer class in every model's tokenizer_config.json, so that
    Mergenetic's pinned transformers 4.45 reads tokenizers saved by transformers 5."""
    for d in [models.base, *models.descendants.values()]:
        path = Path(d) / "tokenizer_config.json"
        if path.exists():
            cfg = json.loads(path.read_text())
            if cfg.get("tokenizer_class") != "PreTrainedTokenizerFast":
                cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
                path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False))


def _num_layers(model_dir: Path) -> int:
    return int(json.loads((model_dir / "config.json").read_text())["num_hidden_layers"])


def _rates(budget: int, wall: float, setup: float) -> dict[str, float]:
    trial_phase = max(wall - setup, 1e-9)
    return {
        "wall_s": round(wall, 1),
        "setup_s": round(setup, 1),
        "trials_per_hour": round(budget * 3600 / trial_phase, 1),
        "trials_per_hour_end_to_end": round(budget * 3600 / wall, 1),
    }


# ---------------------------------------------------------------------------- evomerge
def run_evomerge(
    models: Any, tasks: Path, work: Path, args: argparse.Namespace, workers: int
) -> dict[str, Any]:
    from evomerge.run import open_run

    run_dir = work / f"evomerge_w{workers}"
    cfg = {
        "name": f"peer-bench-w{workers}",
        "models": {
            "base": str(models.base),
            "sources": [str(models.descendants[s]) for s in ("facts", "register")],
            "names": ["facts", "register"],
        },
        "space": {
            "name": "task_arithmetic_global",
            "method": "task_arithmetic",
            "layer_granularity": _num_layers(models.base),
            "params": {"weight": {"low": 0.0, "high": 1.0}},
        },
        "search": {
            "sampler": "cmaes",
            "n_trials": args.trials,
            "population_size": args.pop_size,
            "seed": args.seed,
        },
        "merge": {"dtype": args.dtype},
        "generation": {"dtype": args.dtype},
        "judging": {
            "judges": {
                "acc": {
                    "type": "lm_eval",
                    "options": {
                        "tasks": [TASK],
                        "metric": "acc",
                        "limit": args.limit,
                        "batch_size": 8,
                        "tasks_dirs": [str(tasks)],
                    },
                }
            }
        },
        "workers": {"num": workers, "device": "cpu"},
        "ray": {"num_cpus": max(2, workers)},
        "analysis": {"top_k": 0, "report": False},
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir.parent / f"evomerge_w{workers}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    cmd = [
        str(Path(sys.executable).parent / "evomerge"),
        "search",
        str(run_dir.parent / f"evomerge_w{workers}.yaml"),
        "--run-dir",
        str(run_dir),
        "--quiet",
    ]
    t0 = datetime.datetime.now()
    res = _run(cmd, log=work / "logs" / f"evomerge_w{workers}.log")
    run = open_run(run_dir)
    done = run.study.complete()
    first = min(t.datetime_start for t in done if t.datetime_start)
    best = run.study.best()
    out = {
        "command": " ".join(cmd),
        "rc": res["rc"],
        "trials": len(done),
        "best": None if best is None or best.values is None else round(best.values[0], 4),
        **_rates(len(done), res["wall_s"], (first - t0).total_seconds()),
    }
    return out


# ---------------------------------------------------------------------------- mergekit-evolve
def _genome(models: Any, tasks: Path, work: Path, args: argparse.Namespace) -> Path:
    genome = {
        "genome": {
            "models": [str(models.descendants["facts"]), str(models.descendants["register"])],
            "merge_method": "task_arithmetic",
            "base_model": str(models.base),
            "layer_granularity": _num_layers(models.base),
            "normalize": False,
            "allow_negative_weights": False,
        },
        "tasks": [{"name": TASK, "metric": "acc,none"}],
        "limit": args.limit,
        "num_fewshot": 0,
        "apply_chat_template": False,
        "fewshot_as_multiturn": False,
    }
    path = work / "mergekit" / "genome.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(genome, sort_keys=False))
    return path


def _tail(lines: list[tuple[float, str]], pattern: str, n: int = 3) -> list[str]:
    hits = [ln.strip() for _, ln in lines if re.search(pattern, ln)]
    return hits[-n:]


def run_mergekit(models: Any, tasks: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    genome = _genome(models, tasks, work, args)
    common = [
        str(genome),
        *("--storage-path", str(work / "mergekit" / "storage")),
        *("--max-fevals", str(args.trials)),
        *("--in-memory", "--no-merge-cuda"),
        *("--task-search-path", str(tasks)),
        *("--random-seed", str(args.seed)),
        *("--batch-size", "8"),
        *("--force-population-size", str(args.pop_size)),
        "--no-save-final-model",
    ]
    out: dict[str, Any] = {}
    # 1. the stock command, as documented (in-memory, CPU merge)
    stock_cmd = [str(MERGEKIT_VENV / "bin" / "mergekit-evolve"), *common]
    modes = set(args.mergekit_modes)
    stock = _run(
        stock_cmd if "stock" in modes else ["true"],
        log=work / "logs" / "mergekit_stock.log",
        timeout=args.stock_timeout,
    )
    out["stock"] = {
        "command": " ".join(stock_cmd),
        "outcome": f"timed out after {args.stock_timeout:.0f} s"
        if stock["timed_out"]
        else f"exit {stock['rc']}",
        "genotypes_received": _tail(stock["lines"], r"Received \d+ genotypes"),
        "error": _tail(stock["lines"], r"\w+Error: ", 1),
    }
    wrapper = [str(MERGEKIT_VENV / "bin" / "python"), str(PEERS / "run_mergekit_evolve.py")]
    env = {"PYTHONPATH": str(PEERS)}
    # 2. the in-memory path with the two shims: does it evaluate a trial?
    cmd = [*wrapper, "--logical-gpu", "--", *common]
    if "in_memory" not in modes:
        cmd = ["true"]
    res = _run(
        cmd, log=work / "logs" / "mergekit_in_memory.log", env=env, timeout=args.stock_timeout * 3
    )
    out["in_memory_with_shims"] = {
        "command": " ".join(cmd),
        "outcome": f"timed out after {args.stock_timeout * 3:.0f} s"
        if res["timed_out"]
        else f"exit {res['rc']}",
        "genotypes_received": _tail(res["lines"], r"Received \d+ genotypes", 1),
        "error": _tail(res["lines"], r"\w+Error: ", 1),
        "best": _tail(res["lines"], r"Best cost: ", 1),
    }
    # 3. the on-disk path (merge to a folder, evaluate from it): mergekit-evolve's other mode,
    # with one evaluator actor (one logical GPU) and, as "adapted_2_actors", with two
    on_disk = [c for c in common if c != "--in-memory"]
    out["adapted"] = _mergekit_on_disk(
        wrapper, on_disk, env, work, args, actors=1, skip="on_disk" not in modes
    )
    if "on_disk_2" in modes:
        out["adapted_2_actors"] = _mergekit_on_disk(
            wrapper, on_disk, env, work, args, actors=2, skip=False
        )
    return out


def _mergekit_on_disk(
    wrapper: list[str],
    on_disk: list[str],
    env: dict[str, str],
    work: Path,
    args: argparse.Namespace,
    *,
    actors: int,
    skip: bool,
) -> dict[str, Any]:
    cmd = [*wrapper, "--logical-gpus", str(actors), "--", *on_disk]
    if actors > 1:
        cmd += ["--num-gpus", str(actors)]
    log = (
        work
        / "logs"
        / ("mergekit_on_disk.log" if actors == 1 else f"mergekit_on_disk_{actors}.log")
    )
    res = _run(["true"] if skip else cmd, log=log, env=env)
    received = [
        (t, int(m.group(1)))
        for t, ln in res["lines"]
        if (m := re.search(r"Received (\d+) genotypes", ln))
    ]
    starts = [t for t, _ in received]
    evaluated = sum(n for _, n in received)  # CMA-ES may overshoot --max-fevals
    best_cost = _tail(res["lines"], r"Best cost: ", 1)
    best = -float(best_cost[0].split(":")[-1]) if best_cost else None
    return {
        "actors": actors,
        "change": (
            "on-disk mode (no --in-memory, which fails as in in_memory_with_shims); "
            "benchmarks/peers/run_mergekit_evolve.py adds a placeholder "
            "lm_eval.models.vllm_causallms (vLLM absent), a no-op torch.cpu.empty_cache, cpu as "
            "the default device of lm-eval's HF wrapper, and "
            f"starts Ray's local cluster with {actors} logical GPU(s) so its GPU actors are "
            f"scheduled ({actors} evaluator actor(s), one torch thread each); merge and eval on "
            "CPU, the rest is mergekit-evolve's own"
        ),
        "command": " ".join(cmd),
        "rc": res["rc"],
        "error": _tail(res["lines"], r"\w+Error: ", 1),
        "trials": evaluated if best is not None else 0,
        "best": None if best is None else round(best, 4),
        **_rates(evaluated or args.trials, res["wall_s"], starts[0] if starts else res["wall_s"]),
    }


# ---------------------------------------------------------------------------- Mergenetic
def _mergenetic_lines(lines: list[tuple[float, str]]) -> list[dict[str, Any]]:
    return [json.loads(ln.split("MERGENETIC ", 1)[1]) for _, ln in lines if "MERGENETIC " in ln]


def run_mergenetic(
    models: Any, tasks: Path, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    base = [
        str(MERGENETIC_VENV / "bin" / "python"),
        str(PEERS / "run_mergenetic.py"),
        "--base",
        str(models.base),
        "--models",
        str(models.descendants["facts"]),
        str(models.descendants["register"]),
        "--tasks-dir",
        str(tasks),
        "--task",
        TASK,
        "--limit",
        str(args.limit),
        "--trials",
        str(args.trials),
        "--pop-size",
        str(args.pop_size),
        "--seed",
        str(args.seed),
        "--work",
        str(work / "mergenetic"),
        "--dtype",
        args.dtype,
    ]
    out: dict[str, Any] = {}
    plain = MERGENETIC_VENV / "plain_install.log"
    if plain.exists():
        text = plain.read_text(errors="replace")
        tried = re.findall(r"Downloading vllm-([\w.]+?)(?:-\d+)?-cp", text)  # -N: build tag
        out["plain_install"] = {
            "command": "pip install --dry-run mergenetic==0.1.1 torch==2.13.0 (benchmarks/peers/setup.sh)",
            "exit": (re.findall(r"^exit (\d+)", text, re.MULTILINE) or [None])[-1],
            "vllm_releases_downloaded_while_backtracking": len(tried),
            "vllm_range": [tried[0], tried[-1]] if tried else [],
            "last_lines": [
                ln
                for ln in text.splitlines()
                if ln.strip() and not ln.startswith("WARNING: Location")
            ][-3:],
        }
    modes = set(args.mergenetic_modes)
    stock = _run(
        [*base, "--stock"] if "stock" in modes else ["true"],
        log=work / "logs" / "mergenetic_stock.log",
        timeout=args.stock_timeout,
    )
    records = _mergenetic_lines(stock["lines"])
    out["stock"] = {
        "command": " ".join([*base, "--stock"]),
        "outcome": next(
            (r for r in records if "stock_error" in r or "stock" in r),
            {"rc": stock["rc"], "last_lines": [ln for _, ln in stock["lines"][-4:]]},
        ),
    }
    res = _run(
        base if "adapted" in modes else ["true"], log=work / "logs" / "mergenetic_adapted.log"
    )
    records = _mergenetic_lines(res["lines"])
    trials = [r for r in records if "trial" in r]
    setup = next((r["setup_s"] for r in records if "setup_s" in r), 0.0)
    out["adapted"] = {
        "change": (
            "mergekit's low_cpu_memory off without CUDA (it stores tensors on cuda), and "
            "load_model returns lm-eval's HF wrapper on CPU instead of its vLLM wrapper"
        ),
        "command": " ".join(base),
        "rc": res["rc"],
        "trials": len(trials),
        "best": round(max(r["score"] for r in trials), 4) if trials else None,
        **_rates(len(trials) or args.trials, res["wall_s"], setup),
    }
    return out


def _params(path: Path) -> int:
    import math

    from safetensors import safe_open

    with safe_open(str(path / "model.safetensors"), "pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=REPO / ".cache-evomerge" / "peer_search")
    ap.add_argument(
        "--models-dir", type=Path, default=None, help="where the models are built (WORK/models)"
    )
    ap.add_argument("--size", default="bench60m")
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--pop-size", type=int, default=6)
    ap.add_argument("--limit", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--dtype",
        default="bfloat16",
        choices=["bfloat16", "float32"],
        help="merge and evaluation dtype of evomerge and Mergenetic (mergekit-evolve's is "
        "fixed: bfloat16)",
    )
    ap.add_argument("--stock-timeout", type=float, default=240.0)
    ap.add_argument("--only", nargs="+", default=["evomerge", "mergekit", "mergenetic"])
    ap.add_argument(
        "--mergekit-modes",
        nargs="+",
        default=["stock", "in_memory", "on_disk", "on_disk_2"],
        help="which to run (on_disk_2: the on-disk mode with two evaluator actors)",
    )
    ap.add_argument(
        "--mergenetic-modes", nargs="+", default=["stock", "adapted"], help="which to run"
    )
    args = ap.parse_args()
    args.work = args.work.resolve()  # the tools run with their log folder as cwd
    if args.models_dir is not None:
        args.models_dir = args.models_dir.resolve()

    from evomerge.demo.forgetting import build_forgetting_models

    started = time.perf_counter()
    load_start = os.getloadavg()
    venvs = {"mergekit": MERGEKIT_VENV, "mergenetic": MERGENETIC_VENV}
    needed = [v for k, v in venvs.items() if k in args.only]
    if needed:
        _setup_peers(needed)
    models = build_forgetting_models(
        args.models_dir or args.work / "models", size=args.size, skills=("register", "facts")
    )
    _portable_tokenizers(models)
    tasks = _task_folder(args.work)
    tools: dict[str, Any] = {}
    if "evomerge" in args.only:
        for w in (1, 2):
            tools[f"evomerge_{w}_worker"] = run_evomerge(models, tasks, args.work, args, w)
    if "mergekit" in args.only:
        tools["mergekit_evolve"] = run_mergekit(models, tasks, args.work, args)
    if "mergenetic" in args.only:
        tools["mergenetic"] = run_mergenetic(models, tasks, args.work, args)

    def runs(t: dict[str, Any]) -> list[dict[str, Any]]:
        """A tool's measured runs: its adapted variants, or itself."""
        subs = [v for k, v in t.items() if k.startswith("adapted") and isinstance(v, dict)]
        return [r for r in (subs or [t]) if r.get("trials")]

    def best_rate(t: dict[str, Any], key: str) -> float:
        return max((r.get(key) or 0.0 for r in runs(t)), default=0.0)

    evo = {k: v for k, v in tools.items() if k.startswith("evomerge")}
    peer = {k: v for k, v in tools.items() if not k.startswith("evomerge")}
    ratios: dict[str, float | None] = {}
    for key in ("trials_per_hour", "trials_per_hour_end_to_end"):
        ours = max((best_rate(v, key) for v in evo.values()), default=0.0)
        theirs = max((best_rate(v, key) for v in peer.values()), default=0.0)
        ratios[key] = round(ours / theirs, 2) if ours and theirs else None
    # like with like: n evomerge workers against n mergekit-evolve evaluator actors
    same: dict[str, float] = {}
    mk = tools.get("mergekit_evolve", {})
    for n, sub in ((1, "adapted"), (2, "adapted_2_actors")):
        e, m = evo.get(f"evomerge_{n}_worker"), mk.get(sub)
        if e and m and e.get("trials") and m.get("trials"):
            for key in ("trials_per_hour", "trials_per_hour_end_to_end"):
                same[f"{n}_{key}"] = round(e[key] / m[key], 2)
    result = {
        "benchmark": "peer_search",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg_start": load_start,
            "loadavg_end": os.getloadavg(),
            "shared": True,
        },
        "models": {
            "base_params": _params(models.base),
            "shape": args.size,
            "fine_tunes": ["facts", "register"],
        },
        "task": {"name": TASK, "metric": "acc", "limit": args.limit, "num_fewshot": 0},
        "dtype": {"evomerge": args.dtype, "mergenetic": args.dtype, "mergekit_evolve": "bfloat16"},
        "budget": {"trials": args.trials, "population": args.pop_size, "seed": args.seed},
        "tools": tools,
        "evomerge_vs_fastest_peer_trials_per_hour": ratios["trials_per_hour"],
        "evomerge_vs_fastest_peer_trials_per_hour_end_to_end": ratios["trials_per_hour_end_to_end"],
        "evomerge_n_workers_vs_mergekit_evolve_n_actors": same,
        "total_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
