"""Run mergekit-evolve (mergekit 0.1.5) in its own venv, on CPU, for benchmarks/peer_search.py.

Usage (with .venv-peer-mergekit/bin/python)::

    run_mergekit_evolve.py --logical-gpu -- GENOME.yml --storage-path DIR --max-fevals N ...

mergekit-evolve's in-memory evaluator is a Ray actor that asks for one GPU. On a CPU-only
machine Ray's automatic local cluster has none, so the actor is never scheduled (the stock
command waits forever). With ``--logical-gpu`` this wrapper starts the local Ray cluster
itself, declaring one *logical* GPU (a scheduling token: torch still sees no CUDA device),
so the actor runs and merges and evaluates on the CPU (``--no-merge-cuda``). Everything
else is mergekit-evolve's own code path (its CLI entry point, CMA-ES, in-memory merge,
lm-eval). Each line it prints is forwarded as is.
"""

from __future__ import annotations

import argparse
import sys


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--logical-gpu", action="store_true")
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("rest", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    rest = [a for a in args.rest if a != "--"]
    if args.logical_gpu:
        import ray

        ray.init(num_cpus=args.num_cpus, num_gpus=1, include_dashboard=False, log_to_driver=True)
    from mergekit.scripts.evolve import main as evolve

    try:
        evolve.main(args=rest, prog_name="mergekit-evolve", standalone_mode=False)
    finally:
        if args.logical_gpu:
            import ray

            ray.shutdown()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
