"""Merge speed: mergekit-yaml vs ``evomerge merge`` vs the in-memory MergeEngine.

Builds (once, cached) a Llama-shaped base model and two "fine-tunes" of ~200M parameters,
then for each method measures:

- ``mergekit-yaml`` wall time (subprocess, CPU, --no-copy-tokenizer --no-lazy-unpickle);
- ``evomerge merge`` wall time (subprocess), and the largest difference to mergekit's
  output for the deterministic methods;
- the engine's one-time precompute, then the per-trial ``MergeEngine.materialize`` time
  (median over several trials with different parameters, after a warmup);
- the engine's effective bandwidth (base + N task vectors read, one output written, in the
  engine dtype) against a plain ``out.copy_(src)`` of the same total traffic.

Prints one JSON object. It is a benchmark, not a test: targets are reported, not asserted.

    python benchmarks/merge_speed.py                       # full size, ~5-15 min on 2 cores
    python benchmarks/merge_speed.py --params-scale 0.05 --layers 2 --trials 3   # quick
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
DETERMINISTIC = {"linear", "task_arithmetic", "ties", "slerp", "breadcrumbs_ties"}
NUM_SOURCES = 2


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


def recipe_dict(
    method: str, models: dict[str, Path], dtype: str, trial: int, out_dtype: str | None = None
) -> dict[str, Any]:
    """Trial ``trial``'s recipe: per-model weights (and densities) drawn from a seeded RNG.

    ``dtype`` is the merge (compute) dtype; ``out_dtype`` the written one when it differs.
    """
    g = torch.Generator().manual_seed(1000 + trial)
    entries = []
    for i in range(NUM_SOURCES):
        params: dict[str, Any] = {
            "weight": round(0.3 + 0.7 * torch.rand((), generator=g).item(), 4)
        }
        if method in ("ties", "dare_ties", "dare_linear", "breadcrumbs_ties"):
            params["density"] = round(0.3 + 0.4 * torch.rand((), generator=g).item(), 4)
        entries.append({"model": str(models[f"ft_{i + 1}"]), "parameters": params})
    out: dict[str, Any] = {
        "models": entries,
        "merge_method": method,
        "base_model": str(models["base"]),
        "dtype": dtype,
    }
    if out_dtype is not None and out_dtype != dtype:
        out["out_dtype"] = out_dtype
    if method in ("ties", "dare_ties"):
        out["parameters"] = {"normalize": True}
    return out


# -- measurements -------------------------------------------------------------------------


def _bin(name: str) -> str:
    exe = Path(sys.executable).parent / name
    return str(exe) if exe.exists() else name


def time_command(cmd: list[str], threads: int | None = None) -> float:
    env = dict(os.environ)
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(
            f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}"
        )
    return elapsed


def max_abs_diff(a_dir: Path, b_dir: Path) -> float:
    a, b = {}, {}
    for f in a_dir.glob("*.safetensors"):
        a.update(load_file(str(f)))
    for f in b_dir.glob("*.safetensors"):
        b.update(load_file(str(f)))
    if a.keys() != b.keys():
        return float("inf")
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def copy_bandwidth(nbytes: int, device: str, repeats: int = 5) -> float:
    """GB/s (read + written) of ``out.copy_(src)`` moving ``nbytes`` in total."""
    n = nbytes // 2 // 4
    src = torch.randn(n, device=device)
    out = torch.empty_like(src)
    times = []
    for _ in range(repeats + 1):
        _sync(device)
        t0 = time.perf_counter()
        out.copy_(src)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n * 4 / statistics.median(times[1:]) / 1e9


def bench_engine(
    method: str, models: dict[str, Path], *, dtype: str, out_dtype: str, device: str, trials: int
) -> dict[str, Any]:
    from evomerge.merge import MergeEngine, pool_for_recipe
    from evomerge.merge.recipe import MergeRecipe

    recipes = [
        MergeRecipe.from_mergekit_dict(recipe_dict(method, models, dtype, t, out_dtype))
        for t in range(trials + 1)
    ]
    t0 = time.perf_counter()
    pool = pool_for_recipe(recipes[0])
    t1 = time.perf_counter()
    engine = MergeEngine(pool, device=device, dtype=DTYPES[dtype], seed=0, methods=[method])
    _sync(device)
    t2 = time.perf_counter()
    engine.materialize(recipes[0])  # warmup
    _sync(device)
    t3 = time.perf_counter()
    times = []
    for r in recipes[1:]:
        _sync(device)
        start = time.perf_counter()
        out = engine.materialize(r)
        _sync(device)
        times.append(time.perf_counter() - start)
    n_params = sum(t.numel() for t in out.values())
    del out, engine, pool
    gc.collect()
    return {
        "pool_open_s": round(t1 - t0, 3),
        "engine_precompute_s": round(t2 - t1, 3),
        "engine_warmup_trial_s": round(t3 - t2, 3),
        "engine_trial_s_median": round(statistics.median(times), 4),
        "engine_trial_s_min": round(min(times), 4),
        "engine_trial_s_all": [round(t, 4) for t in times],
        "n_params": n_params,
    }


def machine_info(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "nproc": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "loadavg_at_end_1_5_15": [
            round(x, 2) for x in os.getloadavg()
        ],  # other work sharing the CPU
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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "evomerge-bench-models"
    )
    ap.add_argument(
        "--params-scale", type=float, default=1.0, help="x parameters (1.0: ~220M at 12 layers)"
    )
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--methods", default="ties,dare_ties,task_arithmetic")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (engine and both CLIs)")
    ap.add_argument(
        "--dtype",
        default="bfloat16",
        choices=sorted(DTYPES),
        help="dtype of the models and the output",
    )
    ap.add_argument(
        "--merge-dtype",
        default=None,
        choices=sorted(DTYPES),
        help="compute dtype: the YAML's dtype (mergekit, evomerge merge) and the engine's (default: --dtype)",
    )
    ap.add_argument(
        "--trials", type=int, default=5, help="timed engine trials per method (after a warmup)"
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for the engine and both CLIs (OMP/MKL_NUM_THREADS); default: torch's. "
        "On a shared CPU, 1 avoids OpenMP stalls that make timings meaningless",
    )
    ap.add_argument("--skip-mergekit", action="store_true")
    ap.add_argument("--skip-cli", action="store_true", help="skip the evomerge merge subprocess")
    args = ap.parse_args(argv)

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    merge_dtype = args.merge_dtype or args.dtype
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    shape = model_shape(args.params_scale, args.layers)
    t0 = time.perf_counter()
    models = build_models(args.cache_dir, shape, args.dtype)
    build_s = time.perf_counter() - t0
    n_params = sum(torch.Size(s).numel() for s in tensor_shapes(shape).values())
    elem = torch.empty((), dtype=DTYPES[merge_dtype]).element_size()  # the engine's resident dtype
    traffic = (1 + NUM_SOURCES) * n_params * elem + n_params * elem  # read base + N, write 1
    copy_gbps = copy_bandwidth(traffic, args.device)

    results: dict[str, Any] = {}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup below when killed
    work = Path(tempfile.mkdtemp(prefix="merge-speed-"))
    try:
        for method in methods:
            r: dict[str, Any] = {}
            cfg = work / f"{method}.yaml"
            cfg.write_text(
                yaml.safe_dump(
                    recipe_dict(method, models, merge_dtype, 0, args.dtype), sort_keys=False
                )
            )
            mk_out, ev_out = work / f"{method}-mergekit", work / f"{method}-evomerge"
            if not args.skip_mergekit:
                r["mergekit_yaml_s"] = round(
                    time_command(
                        [
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
                        args.threads,
                    ),
                    2,
                )
            if not args.skip_cli:
                r["evomerge_merge_s"] = round(
                    time_command(
                        [
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
                        args.threads,
                    ),
                    2,
                )
            if mk_out.exists() and ev_out.exists() and method in DETERMINISTIC:
                r["max_abs_diff_vs_mergekit"] = max_abs_diff(mk_out, ev_out)
            shutil.rmtree(mk_out, ignore_errors=True)
            shutil.rmtree(ev_out, ignore_errors=True)
            r.update(
                bench_engine(
                    method,
                    models,
                    dtype=merge_dtype,
                    out_dtype=args.dtype,
                    device=args.device,
                    trials=args.trials,
                )
            )
            trial = r["engine_trial_s_median"]
            r["engine_GBps"] = round(traffic / trial / 1e9, 2)
            r["engine_fraction_of_copy_bandwidth"] = round(traffic / trial / 1e9 / copy_gbps, 3)
            if "mergekit_yaml_s" in r:
                r["trial_speedup_vs_mergekit_yaml"] = round(r["mergekit_yaml_s"] / trial, 1)
                if "evomerge_merge_s" in r:
                    r["evomerge_merge_vs_mergekit_yaml"] = round(
                        r["evomerge_merge_s"] / r["mergekit_yaml_s"], 2
                    )
            results[method] = r
            print(f"# {method}: {json.dumps(r)}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if "task_arithmetic" in results:
        ta = results["task_arithmetic"]["engine_trial_s_median"]
        for r in results.values():
            r["trial_vs_task_arithmetic"] = round(r["engine_trial_s_median"] / ta, 2)
    targets = {}
    for m in ("ties", "dare_ties"):
        r = results.get(m, {})
        if "trial_speedup_vs_mergekit_yaml" in r:
            targets[f"{m}_trial_>=10x_faster_than_mergekit_yaml"] = (
                r["trial_speedup_vs_mergekit_yaml"] >= 10
            )
        if "trial_vs_task_arithmetic" in r:
            targets[f"{m}_trial_<=2x_task_arithmetic"] = r["trial_vs_task_arithmetic"] <= 2
    for m, r in results.items():
        if "evomerge_merge_vs_mergekit_yaml" in r:
            targets[f"{m}_evomerge_merge_not_slower_than_mergekit_yaml"] = (
                r["evomerge_merge_vs_mergekit_yaml"] <= 1.0
            )
    report = {
        "benchmark": "merge_speed",
        "machine": machine_info(args.device),
        "model": {
            **shape,
            "params": n_params,
            "dtype": args.dtype,
            "merge_dtype": merge_dtype,
            "sources": NUM_SOURCES,
            "build_or_cache_s": round(build_s, 1),
        },
        "trials": args.trials,
        "traffic_bytes_per_trial": traffic,
        "copy_GBps": round(copy_gbps, 2),
        "methods": results,
        "targets": targets,
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
