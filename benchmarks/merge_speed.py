"""Merge speed, like with like: the engine vs mergekit's in-memory path, set-up, one-off CLIs.

For each model size (Llama-shaped triples: a base and two fine-tunes, bf16 safetensors;
``60M`` and ``220M`` parameters by default) and each method (``ties``, ``dare_ties``),
in one run on the same models, it measures (each in a fresh process):

- **per trial**: ``MergeEngine.materialize`` (median of ``--trials`` recipes with other
  weights and densities) vs **mergekit's own in-memory path**, the one mergekit-evolve
  uses: ``MergePlanner`` per trial, its tensor tasks run by ``mergekit.graph.Executor``
  with warm loaders (``LoaderCache`` kept open across trials). In mergekit 0.1.5
  ``plan_in_memory()`` cannot be used (``ReturnTensor`` fails pydantic validation: "Can't
  instantiate abstract class Task[Tensor]"), so the planner's tensor tasks are run
  directly (``planner._plan()``; ``planner._tensors``), which is what ``ReturnTensor`` wraps;
- **set-up**: the engine's pool open + precompute (mergekit's magnitude sort for ties,
  noise for DARE), cold (computed, and written to a fresh ``PrecomputeCache``) and cached
  (read back, as every other worker on the node and a resumed run do); the first trial,
  which pays the process's first ``torch.compile`` of the fused kernel (a fresh inductor
  cache directory, so the compile is cold), is reported and counted separately;
- **amortized** cost per trial ``(set-up + first trial + (N - 1) trials) / N`` for
  N = 1, 10, 100, for the engine (cold and cached) and for mergekit (its first trial,
  which opens the loaders, then its median);
- **one-off**: ``evomerge merge`` vs ``mergekit-yaml`` (subprocesses, same YAML), and the
  largest difference between their outputs (ties: they keep the same coordinates).

Every merge computes in float32 (YAML ``dtype: float32``, ``out_dtype: bfloat16``; engine
dtype float32). Prints one JSON object; targets are reported, not asserted. On a shared
CPU use ``--threads 1`` (every process gets one thread: OpenMP regions stall when the
machine is oversubscribed) and compare ratios from one run, not seconds across runs.

    python benchmarks/merge_speed.py --threads 1                      # 60M and 220M, ~1 h here
    python benchmarks/merge_speed.py --sizes 5M --trials 2 --mergekit-trials 1 --threads 1
    python benchmarks/merge_speed.py --cli-only --methods ties --threads 2   # one-off only
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
NUM_SOURCES = 2
#: Model sizes by name: the ``params_scale`` of :func:`model_shape` at 12 layers.
SIZES = {"5M": 0.02, "60M": 0.27, "220M": 1.0}
AMORTIZE_N = (1, 10, 100)


# -- the models ---------------------------------------------------------------------------


def model_shape(params_scale: float, layers: int) -> dict[str, int]:
    """Hidden 1024, intermediate 2816, vocab 32000 at scale 1; each dimension x sqrt(scale)."""

    def dim(x: int) -> int:
        return max(64, round(x * params_scale**0.5 / 64) * 64)  # multiples of the head size

    hidden = dim(1024)
    return {
        "hidden": hidden,
        "intermediate": dim(2816),
        "vocab": dim(32000),
        "layers": layers,
        "heads": hidden // 64,
    }


def tensor_shapes(shape: dict[str, int]) -> dict[str, tuple[int, ...]]:
    h, i, v = shape["hidden"], shape["intermediate"], shape["vocab"]
    out: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, h)}
    for layer in range(shape["layers"]):
        p = f"model.layers.{layer}."
        out[p + "input_layernorm.weight"] = (h,)
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            out[p + f"self_attn.{proj}.weight"] = (h, h)
        out[p + "post_attention_layernorm.weight"] = (h,)
        out[p + "mlp.gate_proj.weight"] = (i, h)
        out[p + "mlp.up_proj.weight"] = (i, h)
        out[p + "mlp.down_proj.weight"] = (h, i)
    out["model.norm.weight"] = (h,)
    out["lm_head.weight"] = (v, h)
    return out


def _config(shape: dict[str, int], dtype: str) -> dict[str, Any]:
    from evomerge.testing.tiny import tiny_config

    cfg = tiny_config(
        "llama",
        vocab_size=shape["vocab"],
        num_layers=shape["layers"],
        hidden_size=shape["hidden"],
        intermediate_size=shape["intermediate"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["heads"],
        max_positions=2048,
    )
    d = cfg.to_dict()
    d["dtype"] = dtype
    d["architectures"] = ["LlamaForCausalLM"]
    return d


def _check_names(config: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> None:
    """The synthetic tensors must be exactly what transformers' Llama expects."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(LlamaConfig(**config))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if expected != shapes:
        raise SystemExit(
            f"synthetic tensors differ from transformers' Llama: {set(expected) ^ set(shapes)}"
        )


def build_models(cache_dir: Path, shape: dict[str, int], dtype: str) -> dict[str, Path]:
    """base, ft_1, ft_2 as safetensors folders under ``cache_dir`` (reused when present)."""
    key = "llama-h{hidden}-i{intermediate}-v{vocab}-l{layers}".format(**shape) + f"-{dtype}"
    root = cache_dir / key
    names = ["base"] + [f"ft_{i + 1}" for i in range(NUM_SOURCES)]
    paths = {n: root / n for n in names}
    if (root / "done").is_file():
        return paths
    config = _config(shape, dtype)
    shapes = tensor_shapes(shape)
    _check_names(config, shapes)
    tdtype = DTYPES[dtype]
    gen = torch.Generator().manual_seed(0)
    base: dict[str, torch.Tensor] = {}
    for name, s in shapes.items():
        if len(s) == 1:  # norms: around 1 with some spread
            base[name] = (1 + 0.1 * torch.randn(s, generator=gen)).to(tdtype)
        else:
            base[name] = (0.02 * torch.randn(s, generator=gen)).to(tdtype)
    for n, path in paths.items():
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(config, indent=2))
        if n == "base":
            tensors = base
        else:  # a fine-tune: every weight moved by noise of 10% of its scale
            tensors = {
                k: (v.float() + 0.002 * torch.randn(v.shape, generator=gen)).to(tdtype)
                for k, v in base.items()
            }
        save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
        del tensors
    (root / "done").write_text("ok\n")
    return paths


# -- recipes ------------------------------------------------------------------------------


def recipe_dict(method: str, models: dict[str, Path], trial: int) -> dict[str, Any]:
    """Trial ``trial``'s recipe: per-model weights and densities from a seeded RNG."""
    g = torch.Generator().manual_seed(1000 + trial)
    entries = []
    for i in range(NUM_SOURCES):
        params = {
            "weight": round(0.3 + 0.7 * torch.rand((), generator=g).item(), 4),
            "density": round(0.3 + 0.4 * torch.rand((), generator=g).item(), 4),
        }
        entries.append({"model": str(models[f"ft_{i + 1}"]), "parameters": params})
    return {
        "models": entries,
        "merge_method": method,
        "base_model": str(models["base"]),
        "parameters": {"normalize": True},
        "dtype": "float32",
        "out_dtype": "bfloat16",
    }


# -- workers (each measurement runs in its own process) -----------------------------------


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn: Any, device: str) -> tuple[float, Any]:
    _sync(device)
    t0 = time.perf_counter()
    value = fn()
    _sync(device)
    return time.perf_counter() - t0, value


def worker_engine(args: argparse.Namespace, models: dict[str, Path]) -> dict[str, Any]:
    from evomerge.merge import MergeEngine, MergeRecipe, pool_for_recipe

    dev = args.device
    recipes = [
        MergeRecipe.from_mergekit_dict(recipe_dict(args.method, models, t))
        for t in range(args.trials + 1)
    ]
    cache = Path(args.cache)
    pool_s, pool = _timed(lambda: pool_for_recipe(recipes[0]), dev)

    def build() -> MergeEngine:
        return MergeEngine(
            pool, device=dev, dtype=torch.float32, methods=[args.method], cache_dir=cache
        )

    cold_s, engine = _timed(build, dev)
    first_s, out = _timed(lambda: engine.materialize(recipes[0]), dev)
    first_out = {k: v.clone() for k, v in out.items()}
    times = [_timed(lambda r=r: engine.materialize(r), dev)[0] for r in recipes[1:]]
    n_params = sum(t.numel() for t in out.values())
    del engine, out
    gc.collect()
    cached_s, engine = _timed(build, dev)  # every other worker, a resumed run
    same = all(torch.equal(v, first_out[k]) for k, v in engine.materialize(recipes[0]).items())
    return {
        "pool_open_s": round(pool_s, 3),
        "precompute_cold_s": round(cold_s, 3),
        "precompute_cached_s": round(cached_s, 3),
        "first_trial_s": round(first_s, 3),
        "trial_s_median": round(statistics.median(times), 4),
        "trial_s_all": [round(t, 4) for t in times],
        "cached_engine_gives_the_same_merge": same,
        "n_params": n_params,
    }


def worker_mergekit(args: argparse.Namespace, models: dict[str, Path]) -> dict[str, Any]:
    """mergekit-evolve's per-trial path: plan in memory, run the tensor tasks, warm loaders."""
    from mergekit.architecture import get_architecture_info
    from mergekit.config import MergeConfiguration
    from mergekit.graph import Executor
    from mergekit.io.tasks import LoaderCache
    from mergekit.merge import _model_out_config
    from mergekit.options import MergeOptions
    from mergekit.plan import MergePlanner

    opts = MergeOptions(device=args.device, quiet=True, random_seed=0)
    configs = [
        MergeConfiguration.model_validate(recipe_dict(args.method, models, t))
        for t in range(args.trials + 1)
    ]
    t0 = time.perf_counter()
    arch = get_architecture_info(configs[0], opts)
    loaders = LoaderCache()
    loaders.setup(options=opts)
    for model in configs[0].referenced_models():
        loaders.get(model)  # warm loaders, as mergekit-evolve keeps them
    out_cfg = _model_out_config(configs[0], arch, trust_remote_code=False)
    setup_s = time.perf_counter() - t0

    def trial(cfg: MergeConfiguration) -> int:
        planner = MergePlanner(cfg, arch, options=opts, out_model_config=out_cfg)
        planner._plan()  # plan_in_memory() fails in 0.1.5: run its tensor tasks directly
        tasks = [task for _, task in planner._tensors]
        executor = Executor(tasks, math_device=args.device, storage_device=args.device)
        return sum(1 for _ in executor.run(quiet=True))

    first_s, n = _timed(lambda: trial(configs[0]), args.device)
    times = [_timed(lambda c=c: trial(c), args.device)[0] for c in configs[1:]]
    return {
        "setup_s": round(setup_s, 3),
        "first_trial_s": round(first_s, 3),
        "trial_s_median": round(statistics.median(times), 3),
        "trial_s_all": [round(t, 3) for t in times],
        "tensors": n,
    }


# -- the parent -----------------------------------------------------------------------------


def _bin(name: str) -> str:
    exe = Path(sys.executable).parent / name
    return str(exe) if exe.exists() else name


def _env(threads: int | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env.update(extra or {})
    return env


def run_worker(
    kind: str, argv: list[str], threads: int | None, extra_env: dict[str, str]
) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", kind, *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(threads, extra_env))
    if proc.returncode != 0:
        raise SystemExit(f"worker {kind} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def time_command(cmd: list[str], threads: int | None, extra_env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(threads, extra_env))
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(
            f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}"
        )
    return elapsed


def max_abs_diff(a_dir: Path, b_dir: Path) -> float:
    a: dict[str, torch.Tensor] = {}
    b: dict[str, torch.Tensor] = {}
    for f in a_dir.glob("*.safetensors"):
        a.update(load_file(str(f)))
    for f in b_dir.glob("*.safetensors"):
        b.update(load_file(str(f)))
    if a.keys() != b.keys():
        return float("inf")
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def one_off(
    method: str, models: dict[str, Path], work: Path, args: argparse.Namespace, env: dict[str, str]
) -> dict[str, Any]:
    """Both CLIs on the same YAML, ``--cli-repeats`` times in alternating order; the fastest
    run of each is compared (on a shared machine the minimum is the least disturbed)."""
    cfg = work / f"{method}.yaml"
    cfg.write_text(yaml.safe_dump(recipe_dict(method, models, 0), sort_keys=False))
    mk_out, ev_out = work / f"{method}-mergekit", work / f"{method}-evomerge"
    commands = {
        "mergekit": [
            _bin("mergekit-yaml"),
            str(cfg),
            str(mk_out),
            "--no-copy-tokenizer",
            "--no-lazy-unpickle",
            "--device",
            args.device,
            "--quiet",
            "--random-seed",
            "0",
        ],
        "evomerge": [
            sys.executable,
            "-m",
            "evomerge.cli",
            "merge",
            str(cfg),
            str(ev_out),
            "--device",
            args.device,
            "--quiet",
        ],
    }
    times: dict[str, list[float]] = {"mergekit": [], "evomerge": []}
    for rep in range(args.cli_repeats):
        order = ["mergekit", "evomerge"] if rep % 2 == 0 else ["evomerge", "mergekit"]
        for tool in order:
            out_dir = mk_out if tool == "mergekit" else ev_out
            shutil.rmtree(out_dir, ignore_errors=True)
            times[tool].append(round(time_command(commands[tool], args.threads, env), 2))
    mk, ev = min(times["mergekit"]), min(times["evomerge"])
    out: dict[str, Any] = {
        "mergekit_yaml_s": mk,
        "evomerge_merge_s": ev,
        "speedup": round(mk / ev, 2),
        "runs": times,
    }
    if method == "ties":  # deterministic: the same coordinates kept, float32 math, bf16 out
        out["max_abs_diff"] = max_abs_diff(mk_out, ev_out)
    shutil.rmtree(mk_out, ignore_errors=True)
    shutil.rmtree(ev_out, ignore_errors=True)
    return out


def amortized(setup_s: float, first_s: float, trial_s: float) -> dict[str, float]:
    return {f"N={n}": round((setup_s + first_s + (n - 1) * trial_s) / n, 4) for n in AMORTIZE_N}


def measure(
    method: str, models: dict[str, Path], work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    inductor = work / f"inductor-{method}"  # a fresh compile cache: the first compile is cold
    env = {"TORCHINDUCTOR_CACHE_DIR": str(inductor)}
    common = [
        "--models",
        json.dumps({k: str(v) for k, v in models.items()}),
        "--method",
        method,
        "--device",
        args.device,
    ]
    r: dict[str, Any] = {}
    if not args.skip_cli:
        r["one_off"] = one_off(method, models, work, args, env)
        shutil.rmtree(inductor, ignore_errors=True)
    if args.cli_only:
        return r
    cache = work / f"cache-{method}"
    eng = run_worker(
        "engine", [*common, "--trials", str(args.trials), "--cache", str(cache)], args.threads, env
    )
    r["cache_bytes"] = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(inductor, ignore_errors=True)
    mk = run_worker("mergekit", [*common, "--trials", str(args.mergekit_trials)], args.threads, {})
    cold = eng["pool_open_s"] + eng["precompute_cold_s"]
    cached = eng["pool_open_s"] + eng["precompute_cached_s"]
    r["engine"] = eng
    r["mergekit_in_memory"] = mk
    r["per_trial"] = {
        "engine_s": eng["trial_s_median"],
        "mergekit_in_memory_s": mk["trial_s_median"],
        "speedup": round(mk["trial_s_median"] / eng["trial_s_median"], 1),
    }
    r["setup"] = {
        "engine_cold_s": round(cold, 3),
        "engine_cached_s": round(cached, 3),
        "first_trial_s (incl. torch.compile)": eng["first_trial_s"],
        "compile_s_est": round(eng["first_trial_s"] - eng["trial_s_median"], 3),
        "cold_vs_one_mergekit_trial": round(cold / mk["trial_s_median"], 2),
        "cached_vs_one_mergekit_trial": round(cached / mk["trial_s_median"], 3),
    }
    r["amortized_s_per_trial"] = {
        "engine_cold": amortized(cold, eng["first_trial_s"], eng["trial_s_median"]),
        "engine_cached": amortized(cached, eng["first_trial_s"], eng["trial_s_median"]),
        "mergekit_in_memory": amortized(mk["setup_s"], mk["first_trial_s"], mk["trial_s_median"]),
    }
    return r


def machine_info(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "nproc": os.cpu_count(),
        "device": device,
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],  # other work on the CPU
    }
    meminfo = _first_line("/proc/meminfo", "MemTotal")
    if meminfo:
        info["ram_gib"] = round(int(meminfo.split()[1]) / 2**20, 1)
    cpu = _first_line("/proc/cpuinfo", "model name")
    if cpu:
        info["cpu"] = cpu.split(":", 1)[1].strip()
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(device)
    from importlib.metadata import PackageNotFoundError, version

    with contextlib.suppress(PackageNotFoundError):
        info["mergekit"] = version("mergekit")
    return info


def _first_line(path: str, prefix: str) -> str | None:
    try:
        with open(path) as f:
            return next((line for line in f if line.startswith(prefix)), None)
    except OSError:
        return None


def targets(results: dict[str, dict[str, Any]]) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for key, r in results.items():
        if "per_trial" not in r:  # --cli-only
            out[f"{key}: evomerge merge >= 1.5x mergekit-yaml"] = r["one_off"]["speedup"] >= 1.5
            continue
        out[f"{key}: per-trial >= 10x mergekit in-memory"] = r["per_trial"]["speedup"] >= 10
        out[f"{key}: cold set-up <= one mergekit in-memory trial"] = (
            r["setup"]["cold_vs_one_mergekit_trial"] <= 1
        )
        out[f"{key}: cached set-up <= one mergekit in-memory trial"] = (
            r["setup"]["cached_vs_one_mergekit_trial"] <= 1
        )
        if "one_off" in r:
            out[f"{key}: evomerge merge >= 1.5x mergekit-yaml"] = r["one_off"]["speedup"] >= 1.5
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "evomerge-bench-models"
    )
    ap.add_argument("--sizes", default="60M,220M", help=f"comma-separated, of {', '.join(SIZES)}")
    ap.add_argument("--methods", default="ties,dare_ties")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--trials", type=int, default=5, help="timed engine trials (after the first)")
    ap.add_argument(
        "--mergekit-trials",
        type=int,
        default=2,
        help="timed mergekit in-memory trials (after the first)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads per process (OMP/MKL_NUM_THREADS); 1 on a shared CPU",
    )
    cli = ap.add_mutually_exclusive_group()
    cli.add_argument("--skip-cli", action="store_true", help="skip the one-off CLI comparison")
    cli.add_argument("--cli-only", action="store_true", help="only the one-off CLI comparison")
    ap.add_argument(
        "--cli-repeats", type=int, default=1, help="runs of each CLI (alternating; fastest kept)"
    )
    ap.add_argument("--worker", choices=("engine", "mergekit"), help=argparse.SUPPRESS)
    ap.add_argument("--models", help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    ap.add_argument("--cache", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.worker is not None:
        models = {k: Path(v) for k, v in json.loads(args.models).items()}
        result = (worker_engine if args.worker == "engine" else worker_mergekit)(args, models)
        print(json.dumps(result))
        return result

    results: dict[str, dict[str, Any]] = {}
    model_info: dict[str, Any] = {}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup below when killed
    work = Path(tempfile.mkdtemp(prefix="merge-speed-"))
    try:
        for size in [s.strip() for s in args.sizes.split(",") if s.strip()]:
            shape = model_shape(SIZES[size], 12)
            t0 = time.perf_counter()
            models = build_models(args.cache_dir, shape, "bfloat16")
            n_params = sum(torch.Size(x).numel() for x in tensor_shapes(shape).values())
            model_info[size] = {
                **shape,
                "params": n_params,
                "build_or_cache_s": round(time.perf_counter() - t0, 1),
            }
            for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
                key = f"{size} {method}"
                results[key] = measure(method, models, work, args)
                print(f"# {key}: {json.dumps(results[key])}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "benchmark": "merge_speed",
        "machine": machine_info(args.device),
        "threads": args.threads,
        "models": model_info,
        "sources": NUM_SOURCES,
        "trials": {"engine": args.trials, "mergekit_in_memory": args.mergekit_trials},
        "results": results,
        "targets": targets(results),
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
