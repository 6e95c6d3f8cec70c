"""The ``lm_eval`` judge's per-trial evaluation against the harness's own per-trial path.

Same process, same live model, same task objects (built once), alternating runs:

- ``harness``: lm-eval's HF wrapper (``HFLM`` on the model object) and the harness's
  ``evaluate`` as the judge ran them before ``share_context``: one row per request,
  requests rebuilt each evaluation;
- ``evomerge``: the judge's path: packed rows (one per context, see
  ``evomerge/judge/harness/_packed.py``), requests kept between evaluations.

Both read the same weights: the ``facts`` descendant of the forgetting family (size
``--size``, ``bench60m`` by default: the model of ``peer_search.py``), task
``persona_facts_mc`` (the bundled multiple-choice task), ``--limit`` documents. Reported:
seconds per evaluation (median of ``--repeats``, after one warm-up each), the ratio, and
how far the two paths' per-request log-likelihoods are apart (max |difference| and in
units of the dtype's precision at the value), plus whether ``acc`` is equal. One torch
thread by default, as a search worker has. Prints one JSON object.

    python benchmarks/lm_eval_judge.py [--dtype bfloat16] [--threads 1] [--repeats 7]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]


def _harness_lm(model: Any, tok: Any, batch_size: int) -> Any:
    from lm_eval.models.huggingface import HFLM

    class Quiet(HFLM):  # the HF wrapper as lm-eval ships it, without progress bars
        def loglikelihood(self, requests: Any, disable_tqdm: bool = False) -> Any:
            return super().loglikelihood(requests, disable_tqdm=True)

    return Quiet(pretrained=model, tokenizer=tok, batch_size=batch_size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--models-dir", type=Path, default=REPO / ".cache-evomerge" / "peer_search" / "models"
    )
    ap.add_argument("--size", default="bench60m")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evomerge.demo.forgetting import build_forgetting_models
    from evomerge.judge.harness import HarnessTasks, metric_value
    from evomerge.judge.harness._hflm import live_hflm

    models = build_forgetting_models(args.models_dir, size=args.size, skills=("register", "facts"))
    path = models.descendants["facts"]
    dtype = getattr(torch, args.dtype)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    tok = AutoTokenizer.from_pretrained(path)
    task_name = "persona_facts_mc"
    ours = HarnessTasks([task_name])  # requests kept between evaluations (seeded few-shot)
    theirs = HarnessTasks([task_name], fewshot_seed=None)  # rebuilt every evaluation
    packed = live_hflm(pretrained=model, tokenizer=tok, batch_size=args.batch_size)
    stock = _harness_lm(model, tok, args.batch_size)

    def run_ours() -> dict[str, dict[str, float]]:
        return ours.evaluate(packed, limit=args.limit)

    def run_theirs() -> dict[str, dict[str, float]]:
        # the task has no few-shot examples, so the unseeded sampler changes nothing
        return theirs.evaluate(stock, limit=args.limit)

    times: dict[str, list[float]] = {"evomerge": [], "harness": []}
    results: dict[str, Any] = {}
    for i in range(args.repeats + 1):  # the first round warms both up and is not counted
        for name, fn in (("evomerge", run_ours), ("harness", run_theirs)):
            t0 = time.perf_counter()
            results[name] = fn()
            if i:
                times[name].append(time.perf_counter() - t0)

    # per request: the same requests through both wrappers
    task = ours.tasks[task_name]
    task.build_all_requests(limit=args.limit, rank=0, world_size=1)
    requests = list(task.instances)
    a = packed.loglikelihood(requests)
    b = stock.loglikelihood(requests)
    eps = torch.finfo(dtype).eps
    diffs = [abs(x[0] - y[0]) for x, y in zip(a, b, strict=True)]
    rel = [
        d / (eps * max(abs(y[0]), 1.0))
        for d, (_, y) in zip(diffs, zip(a, b, strict=True), strict=True)
    ]
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        json.dumps(
            {
                "benchmark": "lm_eval_judge",
                "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "machine": {
                    "platform": platform.platform(),
                    "processor": platform.processor(),
                    "threads": args.threads,
                },
                "model": {
                    "size": args.size,
                    "dtype": args.dtype,
                    "parameters": sum(p.numel() for p in model.parameters()),
                },
                "task": task_name,
                "limit": args.limit,
                "requests": len(requests),
                "contexts": len({r.args[0] for r in requests}),
                "seconds_per_evaluation": {k: round(v, 4) for k, v in med.items()},
                "all_seconds": {k: [round(x, 4) for x in v] for k, v in times.items()},
                "speedup": round(med["harness"] / med["evomerge"], 2),
                # false: the first-call check found the model ignoring the packed layout and
                # the judge fell back to the harness's path (then both sides measure the same)
                "packed_rows_used": bool(packed.share_context),
                "acc": {k: metric_value(v, task_name, "acc") for k, v in results.items()},
                "max_abs_loglikelihood_difference": max(diffs),
                "max_difference_in_eps_of_value": round(max(rel), 2),
                "greedy_flags_equal": sum(x[1] == y[1] for x, y in zip(a, b, strict=True)),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
