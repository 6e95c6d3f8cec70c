"""Run mergekit-evolve (mergekit 0.1.5) in its own venv, on CPU, for benchmarks/peer_search.py.

Usage (with .venv-peer-mergekit/bin/python)::

    run_mergekit_evolve.py --logical-gpu -- GENOME.yml --storage-path DIR --max-fevals N ...

Two changes make it run here, nothing else:

1. mergekit 0.1.5's ``mergekit/evo/actors.py`` names ``lm_eval.models.vllm_causallms.VLLM``
   in a class annotation; lm-eval 0.4.13 imports ``vllm`` at the top of that module, so
   without vLLM (a CPU machine) the module cannot be imported and the stock command stops
   with ``AttributeError: module 'lm_eval.models' has no attribute 'vllm_causallms'``.
   :func:`install_vllm_stub` registers a placeholder module (a class named ``VLLM`` that
   nothing instantiates) in the driver and, through Ray's worker setup hook, in every worker.
2. Its evaluators free accelerator memory with ``torch.<device>.empty_cache()``; on CPU
   that is ``torch.cpu.empty_cache``, which torch does not have (``AttributeError``): the
   same hook adds it as a no-op (there is no cache to empty).
3. Its on-disk evaluator builds lm-eval's HF wrapper without a device, whose default is
   ``cuda`` (``AssertionError: Torch not compiled with CUDA enabled``): the hook makes that
   default ``cpu``.
4. Its evaluators are Ray actors that ask for one GPU. On a CPU-only
machine Ray's automatic local cluster has none, so the actor is never scheduled (the stock
command waits forever). With ``--logical-gpu`` this wrapper starts the local Ray cluster
itself, declaring one *logical* GPU (a scheduling token: torch still sees no CUDA device),
so the actor runs and merges and evaluates on the CPU (``--no-merge-cuda``).
``--logical-gpus N`` declares N, for mergekit-evolve's ``--num-gpus N``: N evaluator actors
(one torch thread each, as Ray gives an actor of ``num_cpus=1``). Everything
else is mergekit-evolve's own code path (its CLI entry point, CMA-ES, in-memory merge,
lm-eval). Each line it prints is forwarded as is.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import types


def install_vllm_stub() -> None:
    """Shims 1 and 2 of the module docstring (in the driver and, via Ray's hook, every worker)."""
    import lm_eval.models

    name = "lm_eval.models.vllm_causallms"
    if name in sys.modules or importlib.util.find_spec("vllm") is not None:
        return
    stub = types.ModuleType(name)

    class VLLM:  # a placeholder: only named in an annotation, never built on this path
        pass

    stub.VLLM = VLLM  # type: ignore[attr-defined]
    sys.modules[name] = stub
    lm_eval.models.vllm_causallms = stub  # type: ignore[attr-defined]
    import torch

    if not hasattr(torch.cpu, "empty_cache"):
        torch.cpu.empty_cache = lambda: None  # type: ignore[attr-defined]
    if not torch.cuda.is_available():
        import functools

        from lm_eval.models.huggingface import HFLM

        init = HFLM.__init__
        if not getattr(init, "_cpu_default", False):

            @functools.wraps(init)
            def cpu_init(self: object, *a: object, **kw: object) -> None:
                kw.setdefault("device", "cpu")
                init(self, *a, **kw)

            cpu_init._cpu_default = True  # type: ignore[attr-defined]
            HFLM.__init__ = cpu_init  # type: ignore[method-assign]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--logical-gpu", action="store_true", help="one logical GPU (--logical-gpus 1)")
    ap.add_argument(
        "--logical-gpus", type=int, default=0, help="logical GPUs: one evaluator actor each"
    )
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("rest", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    rest = [a for a in args.rest if a != "--"]
    install_vllm_stub()
    gpus = args.logical_gpus or (1 if args.logical_gpu else 0)
    if gpus:
        import ray

        ray.init(
            num_cpus=args.num_cpus,
            num_gpus=gpus,
            include_dashboard=False,
            log_to_driver=True,
            runtime_env={"worker_process_setup_hook": "run_mergekit_evolve.install_vllm_stub"},
        )
    from mergekit.scripts.evolve import main as evolve

    try:
        evolve.main(args=rest, prog_name="mergekit-evolve", standalone_mode=False)
    finally:
        if gpus:
            import ray

            ray.shutdown()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
