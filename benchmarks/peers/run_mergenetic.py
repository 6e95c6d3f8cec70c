"""Run a Mergenetic 0.1.1 search in its own venv, on CPU, for benchmarks/peer_search.py.

Usage (with .venv-peer-mergenetic/bin/python)::

    run_mergenetic.py --base B --models M1 M2 --tasks-dir D --task T --limit 16 \
        --trials 12 --pop-size 6 --seed 0 --work W [--stock]

Mergenetic's own pieces do the work: ``TaskArithmeticMerger`` writes a mergekit config and
merges to disk every trial, ``LmHarnessEvaluator`` runs the lm-eval task (built per trial,
as Mergenetic's ``LmEvalMultiObjectiveProblem.metrics_4_genotype`` builds it), pymoo's GA
searches, ``Searcher`` drives. The problem below is the single-objective form of that
lm-eval problem (Mergenetic ships only the multi-objective one).

``--stock`` runs one trial as shipped and reports the error: its merger asks mergekit for
``low_cpu_memory=True``, which in mergekit 0.0.6 keeps every tensor on ``cuda``
(``AssertionError: Torch not compiled with CUDA enabled``), and its ``load_model`` builds
lm-eval's vLLM wrapper. Without ``--stock`` two substitutions make it run on CPU:
``low_cpu_memory`` is turned off when there is no CUDA (the merge itself is Mergenetic's
call of mergekit's ``run_merge``), and ``load_model`` returns lm-eval's HF wrapper on the
merged folder.

Prints one JSON line per trial (``{"trial", "t", "score"}``, ``t`` in seconds since start)
and a final ``{"done": ...}`` line.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from typing import Any

START = time.perf_counter()


def emit(obj: dict[str, Any]) -> None:
    print("MERGENETIC " + json.dumps(obj), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--tasks-dir", required=True)
    ap.add_argument("--task", required=True)
    ap.add_argument("--limit", type=int, required=True)
    ap.add_argument("--trials", type=int, required=True)
    ap.add_argument("--pop-size", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--work", required=True)
    ap.add_argument("--dtype", default="bfloat16")  # Mergenetic's own load_model: bfloat16
    ap.add_argument("--stock", action="store_true")
    args = ap.parse_args()

    import numpy as np
    from mergenetic.evaluation.lm_harness import LmHarnessEvaluator
    from mergenetic.merging.taskarithmetic_merger import TaskArithmeticMerger
    from mergenetic.optimization.merging_problem import MergingProblem
    from mergenetic.searcher.searcher import Searcher
    from pymoo.algorithms.soo.nonconvex.ga import GA

    ids = list(range(args.limit))
    trials: list[dict[str, Any]] = []

    class LmEvalProblem(MergingProblem):  # type: ignore[misc]
        def metrics_4_genotype(self, model: Any, tokenizer: Any = None) -> Any:
            evaluator = LmHarnessEvaluator(
                task_name=args.task,
                sample_ids=ids,
                correctness_metric="acc",
                additional_templates_folder=args.tasks_dir,
                batch_size=args.batch_size,
            )
            acc = float(np.mean(evaluator.evaluate(model)))
            record = {"trial": len(trials), "t": time.perf_counter() - START, "score": acc}
            trials.append(record)
            emit(record)
            return [-acc], f"acc={acc}"

        def test(self) -> Any:  # not used by the benchmark
            raise NotImplementedError

    class CpuProblem(LmEvalProblem):
        def load_model(self, path: Any, verbose: bool = True) -> Any:
            from lm_eval.models.huggingface import HFLM

            return HFLM(
                pretrained=str(path),
                device="cpu",
                dtype=args.dtype,
                batch_size=self.eval_batch_size,
            )

    merger = TaskArithmeticMerger(
        run_id="bench",
        path_to_base_model=args.base,
        model_paths=args.models,
        path_to_store_yaml=f"{args.work}/yaml",
        path_to_store_merged_model=f"{args.work}/merged",
        dtype=args.dtype,
    )
    if not args.stock:
        import mergenetic.merging.merger as merger_module
        import torch

        options_cls = merger_module.MergeOptions

        def cpu_options(**kw: Any) -> Any:
            if not torch.cuda.is_available():
                kw["low_cpu_memory"] = False
            return options_cls(**kw)

        merger_module.MergeOptions = cpu_options  # type: ignore[assignment]
    cls = LmEvalProblem if args.stock else CpuProblem
    problem = cls(
        merger,
        search_df=None,
        n_var=len(args.models),
        n_obj=1,
        xl=0.0,
        xu=1.0,
        eval_batch_size=args.batch_size,
        device="cpu",
        load_in_4bit=False,
        use_lm_eval=True,
    )
    emit({"setup_s": time.perf_counter() - START})
    if args.stock:
        try:
            out: dict[str, Any] = {}
            problem._evaluate(np.full(len(args.models), 0.5), out)
            emit({"stock": "ran", "F": [float(v) for v in out["F"]]})
        except Exception as err:
            tb = traceback.format_exc().strip().splitlines()
            emit({"stock_error": f"{type(err).__name__}: {err}", "where": tb[-3:]})
        return
    algorithm = GA(pop_size=args.pop_size, eliminate_duplicates=True)
    searcher = Searcher(
        problem,
        algorithm,
        results_path=args.work,
        n_iter=max(1, args.trials // args.pop_size),
        seed=args.seed,
        run_id="bench",
        verbose=False,
    )
    searcher.search()
    best = max((t["score"] for t in trials), default=float("nan"))
    emit({"done": True, "trials": len(trials), "best": best, "wall_s": time.perf_counter() - START})


if __name__ == "__main__":
    main()
