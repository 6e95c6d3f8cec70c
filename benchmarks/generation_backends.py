"""Per-trial reload + generate, hf vs vllm (vLLM's CPU build), on CPU.

A trial of a search worker loads new merged weights into its live generator and
generates the answers to the prompt set. This measures exactly that, per backend, on its
own per-trial path (``HFGenerator.load_weights`` copies into the live parameters;
``VLLMGenerator.load_weights`` is vLLM's in-place ``reload_weights`` plus a prefix-cache
reset), alternating between two fine-tunes so every trial really changes the weights.
The start-up (model load, engine start) is reported apart and amortized over
``--amortize`` trials.

Models: the demo's base model (``evomerge.demo.models``, when its head_dim is one vLLM's
CPU attention takes; otherwise reported as skipped) and a ~100M-parameter Llama built
locally (hidden 768, 12 heads of 64, 14 layers, the char tokenizer). Each backend runs in
a subprocess of its own, as in a worker: vLLM's in-process engine sets this process's
torch to one thread (its default for serving), which would slow an hf run after it.

The two backends alternate (hf, vllm, hf, vllm, ... ``--repeats`` rounds), so that a
change of load on a shared machine hits both; each figure is the median over rounds of
the per-round median. Prints one JSON object. Ratios (hf time / vllm time) are the
figures to compare; absolute seconds depend on the machine and its load.

    python benchmarks/generation_backends.py                    # both models, 10 trials
    python benchmarks/generation_backends.py --models llama100m --trials 5   # quick

On a shared CPU pass ``--threads 1``: both backends then run one torch thread (vLLM's CPU
build already defaults to one while it serves; hf would take every core, and two threads
stall each other on an oversubscribed machine).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROMPTS = [
    "user: Where do you live?\nassistant: ",
    "user: What do you drink in the morning?\nassistant: ",
    "user: Tell me about your weekend.\nassistant: ",
    "user: Who is your best friend?\nassistant: ",
    "user: What is your favourite season?\nassistant: ",
    "user: Do you like music?\nassistant: ",
    "user: What did you study?\nassistant: ",
    "user: Describe your home town.\nassistant: ",
]
LLAMA_100M = dict(
    hidden_size=768, intermediate_size=2048, num_attention_heads=12, num_key_value_heads=12
)
CPU_HEAD_DIMS = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)  # vLLM 0.32's CPU attention


def _head_dim(model_dir: Path) -> int:
    cfg = json.loads((model_dir / "config.json").read_text())
    return int(cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"])


def _params(model_dir: Path) -> int:
    from safetensors import safe_open

    total = 0
    for f in model_dir.glob("*.safetensors"):
        with safe_open(str(f), framework="pt") as sf:
            for k in sf.keys():  # noqa: SIM118 (safe_open is not a Mapping)
                n = 1
                for d in sf.get_slice(k).get_shape():
                    n *= d
                total += n
    return total


def build_models(root: Path, which: list[str]) -> dict[str, dict[str, Any]]:
    """model name -> {base, fine-tunes, head_dim, params}."""
    from evomerge.testing.tiny import build_tiny_model, perturb_model

    out: dict[str, dict[str, Any]] = {}
    if "llama100m" in which:
        base = build_tiny_model(
            root / "llama100m", seed=0, num_layers=14, max_positions=512, **LLAMA_100M
        )
        out["llama100m"] = {"base": base}
    if "demo" in which:
        from evomerge.demo.models import build_demo_models, default_cache_dir

        out["demo"] = {"base": build_demo_models(default_cache_dir(), progress=False).base}
    for name, m in out.items():
        m["fts"] = [
            perturb_model(m["base"], root / f"{name}_ft{i}", seed=10 + i, scale=0.1) for i in (0, 1)
        ]
        m["head_dim"] = _head_dim(m["base"])
        m["params"] = _params(m["base"])
    return out


def run_backend(args: argparse.Namespace) -> dict[str, Any]:
    """The child: start one backend, then time ``--trials`` reload + generate trials."""
    import torch
    from safetensors.torch import load_file

    from evomerge.generate import GenerationParams, HFGenerator, VLLMGenerator, VLLMOptions

    base = Path(args.base)
    weights = [load_file(str(Path(d) / "model.safetensors")) for d in args.fts]
    params = GenerationParams(max_new_tokens=args.new_tokens, batch_size=len(PROMPTS))
    t0 = time.perf_counter()
    if args.backend == "hf":
        gen: Any = HFGenerator.from_pretrained(base, device="cpu", dtype="float32")
    else:
        cfg = json.loads((base / "config.json").read_text())
        max_len = min(512, int(cfg.get("max_position_embeddings", 512)))  # the demo's is 128
        opts = VLLMOptions(max_model_len=max_len, kv_cache_memory_bytes=256 << 20)
        gen = VLLMGenerator.from_pretrained(base, device="cpu", dtype="float32", options=opts)
    startup = time.perf_counter() - t0
    gen.generate(PROMPTS[:1], params)  # warm-up, not timed
    reload_s, generate_s, tokens = [], [], 0
    for i in range(args.trials):
        t0 = time.perf_counter()
        gen.load_weights(weights[i % 2].items())
        t1 = time.perf_counter()
        answers = gen.generate(PROMPTS, params)
        t2 = time.perf_counter()
        reload_s.append(t1 - t0)
        generate_s.append(t2 - t1)
        tokens += sum(len(a) for a in answers)  # char tokenizer: one token per character
    trial = [r + g for r, g in zip(reload_s, generate_s, strict=True)]
    return {
        "startup_s": round(startup, 3),
        "reload_s": round(statistics.median(reload_s), 4),
        "generate_s": round(statistics.median(generate_s), 4),
        "trial_s": round(statistics.median(trial), 4),
        "trial_s_all": [round(t, 4) for t in trial],
        "new_chars_per_trial": tokens / args.trials,
        "torch_threads_during_trials": torch.get_num_threads(),
    }


def _child(backend: str, model: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", backend, "--base", str(model["base"])]
    cmd += ["--fts", *map(str, model["fts"]), "--trials", str(args.trials)]
    cmd += ["--new-tokens", str(args.new_tokens)]
    env = dict(os.environ)
    if args.threads is not None:  # both backends alike (vLLM's CPU default is one thread)
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, env=env)
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _merge_rounds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of each timing over rounds, plus the rounds themselves."""
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
        return {"error": errors[0]}
    out: dict[str, Any] = {
        k: round(statistics.median(r[k] for r in runs), 4)
        for k in ("startup_s", "reload_s", "generate_s", "trial_s")
    }
    out["rounds"] = runs
    out["torch_threads_during_trials"] = runs[0]["torch_threads_during_trials"]
    out["new_chars_per_trial"] = runs[0]["new_chars_per_trial"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["demo", "llama100m"])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--amortize", type=int, default=100, help="trials to spread start-up over")
    ap.add_argument("--repeats", type=int, default=2, help="alternating rounds per backend")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per backend process (OMP/MKL_NUM_THREADS); 1 on a shared CPU",
    )
    ap.add_argument("--child", choices=["hf", "vllm"], help=argparse.SUPPRESS)
    ap.add_argument("--base", help=argparse.SUPPRESS)
    ap.add_argument("--fts", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.backend = args.child
        print(json.dumps(run_backend(args)))
        return

    import torch
    import vllm

    results: dict[str, Any] = {
        "benchmark": "generation_backends",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average": os.getloadavg(),
        },
        "versions": {"torch": torch.__version__, "vllm": vllm.__version__},
        "setup": {
            "trials": args.trials,
            "prompts": len(PROMPTS),
            "max_new_tokens": args.new_tokens,
            "greedy": True,
            "dtype": "float32",
            "amortized_over": args.amortize,
            "rounds": args.repeats,
            "threads": args.threads,
        },
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="genbench") as tmp:
        for name, model in build_models(Path(tmp), args.models).items():
            row: dict[str, Any] = {"params": model["params"], "head_dim": model["head_dim"]}
            if model["head_dim"] not in CPU_HEAD_DIMS:
                row["skipped"] = (
                    f"head_dim {model['head_dim']} is not one vLLM's CPU attention takes "
                    f"({', '.join(map(str, CPU_HEAD_DIMS))})"
                )
                results["models"][name] = row
                continue
            rounds: dict[str, list[dict[str, Any]]] = {"hf": [], "vllm": []}
            for _ in range(args.repeats):
                for backend in ("hf", "vllm"):
                    rounds[backend].append(_child(backend, model, args))
            for backend, runs in rounds.items():
                row[backend] = _merge_rounds(runs)
            hf, vl = row["hf"], row["vllm"]
            if "error" not in hf and "error" not in vl:
                n = args.amortize
                row["hf_over_vllm"] = {
                    "reload": round(hf["reload_s"] / vl["reload_s"], 3),
                    "generate": round(hf["generate_s"] / vl["generate_s"], 3),
                    "trial": round(hf["trial_s"] / vl["trial_s"], 3),
                    f"trial_with_startup_over_{n}": round(
                        (hf["trial_s"] + hf["startup_s"] / n)
                        / (vl["trial_s"] + vl["startup_s"] / n),
                        3,
                    ),
                }
            results["models"][name] = row
    results["machine"]["load_average_after"] = os.getloadavg()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
