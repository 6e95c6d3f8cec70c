"""``evomerge demo``: the whole pipeline on an embedded default, in a few minutes on a CPU.

1. build (or reuse) the tiny models: a char-level Llama base and two LoRA adapters,
   ``style`` (the persona's register in the lower layers, a rival's facts in the upper
   ones) and ``facts`` (her facts in the upper layers, a friendly register in the lower
   ones), see :mod:`evomerge.demo.models`;
2. write ``RUN_DIR/demo_run.yaml`` and run a real ``evomerge search`` on it: local Ray,
   CMA-ES over per-layer-group task-arithmetic weights, the ``hf`` generator, local judges
   (:mod:`evomerge.demo.objective`: style + facts + fluency);
3. score the baselines (:mod:`evomerge.demo.baselines`: both sources, the search's start
   point, the best uniform-weight merge of a grid chosen on the search prompts) and the
   best merge with the same generator, prompts and judges, on the search prompts and on
   held-out prompts; print the table and write ``demo_summary.json`` and
   ``baselines.json``;
4. export the best merge (:meth:`evomerge.run.StudyView.best`, as every command) and run
   the post-search steps (conflict analysis and report) with the baselines in place.

Re-running on the same run directory resumes the search (finished trials are kept).
``backend="vllm"`` (``evomerge demo --backend vllm``) generates with vLLM (its CPU build
here) in the workers and in the baselines, instead of the default ``hf``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from evomerge.atomic import atomic_write
from evomerge.config import RunConfig, load_run_config
from evomerge.demo.baselines import (
    Scored,
    SplitScorer,
    UniformResult,
    best_uniform,
    grid_values,
    source_recipe,
    start_recipe,
    uniform_recipe,
)
from evomerge.demo.data import demo_data_dir, prompts_path
from evomerge.demo.models import SIZES, DemoModels, build_demo_models, default_cache_dir
from evomerge.demo.objective import judging_config, objective_max
from evomerge.exceptions import ConfigError, SearchError
from evomerge.export import export_trial
from evomerge.merge import MergeRecipe
from evomerge.orchestrate import post_search
from evomerge.run import BASELINES_JSON, open_pool, open_run
from evomerge.search import run_search

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_TRIALS",
    "GRID_STEP",
    "LAYER_GRANULARITY",
    "DemoResult",
    "demo_run_config",
    "run_demo",
]

DEFAULT_TRIALS = 40
LAYER_GRANULARITY = 2  # 4 layers: a lower and an upper group, as the adapters were trained
GRID_STEP = 0.25  # the uniform grid: 0, 0.25, ..., 1.5 per source (49 merges)
MAX_NEW_TOKENS = 48
WEIGHT_BOUNDS = (0.0, 1.5)
#: ``generation.backend_options`` with ``backend: vllm``: a KV cache sized for the demo.
VLLM_OPTIONS: dict[str, Any] = {"kv_cache_memory_bytes": 128 << 20}


def demo_run_config(
    models: DemoModels,
    *,
    trials: int,
    workers: int = 1,
    seed: int = 0,
    layer_granularity: int = LAYER_GRANULARITY,
    backend: str = "hf",
) -> dict[str, Any]:
    """The demo's run.yaml as a mapping: every field a real search uses, nothing hidden.

    ``layer_granularity``: layers per group of the search space (2: one weight per source
    for the lower and one for the upper half; the number of layers or more: one weight per
    source for all layers, a uniform-weight search, the demo's control experiment).
    """
    low, high = WEIGHT_BOUNDS
    return {
        "name": "demo",
        "models": {
            "base": str(models.base),
            "sources": [str(models.style), str(models.facts)],
            "names": ["style", "facts"],
        },
        "space": {
            "name": "task_arithmetic_layerwise",
            "description": f"Task-vector weight per source and group of {layer_granularity} layers.",
            "method": "task_arithmetic",
            "layer_granularity": layer_granularity,
            "params": {"weight": {"low": low, "high": high}},
            "normalize": False,
        },
        "search": {
            "sampler": "cmaes",
            "n_trials": trials,
            "population_size": 8,
            "seed": seed,
            "retries": 1,
        },
        "merge": {"dtype": "float32", "seed": seed},
        "generation": {
            "backend": backend,
            **({"backend_options": VLLM_OPTIONS} if backend == "vllm" else {}),
            "params": {
                "max_new_tokens": MAX_NEW_TOKENS,
                "temperature": 0.0,
                "stop": ["\n"],
                "batch_size": 24,
            },
            "prompts": str(prompts_path("search")),
            "heldout_prompts": str(prompts_path("heldout")),
        },
        "judging": judging_config(),
        "workers": {"num": workers, "device": "cpu", "cpus_per_worker": 1},
        "analysis": {"top_k": 2},
    }


@dataclass
class DemoResult:
    """``summary``: the content of ``demo_summary.json``; ``table``: baselines vs best merge."""

    summary: dict[str, Any]
    table: str
    run_dir: Path

    def format(self) -> str:
        s, h = self.summary, self.summary["heldout"]
        rivals = {
            **{f"source {n}": v for n, v in h["sources"].items()},
            "the start point": h["start"],
            "the best uniform merge": h["uniform_best"],
        }
        beaten = [n for n, v in rivals.items() if h["best"] > v]
        lost = [n for n in rivals if n not in beaten]
        verdict = "beats " + ", ".join(beaten) if beaten else "beats none of the baselines"
        if lost:
            verdict += "; does NOT beat " + ", ".join(lost)
        return "\n".join(
            [
                self.table,
                "",
                f"objective = style + facts + fluency/100 (at most {s['objective_max']:g})",
                f"best merge (trial {s['best_trial']}): {s['best']:.3f} on the search prompts, "
                f"{s['search_gain']:+.1%} over the start point",
                f"held-out: the best merge {verdict}",
                f"report:   {s['report']}",
                f"exported: {s['exported']}",
                f"summary:  {self.run_dir / 'demo_summary.json'} ({s['seconds']} s in all)",
            ]
        )


def _table(rows: dict[str, tuple[Scored, Scored]], judges: list[str]) -> str:
    head = f"{'model':<26}" + "".join(f"{j:>9}" for j in judges) + f"{'search':>9}{'held-out':>10}"
    lines = [head, "-" * len(head)]
    for name, (search, heldout) in rows.items():
        row = f"{name:<26}" + "".join(f"{search.scores.get(j, math.nan):9.3f}" for j in judges)
        lines.append(row + f"{search.value:9.3f}{heldout.value:10.3f}")
    return "\n".join(lines)


def _weights_label(weights: dict[str, float]) -> str:
    return "(" + ", ".join(f"{w:g}" for w in weights.values()) + ")"


class _Phases:
    """Wall and CPU seconds (this process only; Ray workers not included) per phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, dict[str, float]] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.seconds[name] = {
                "wall_s": round(time.perf_counter() - wall, 1),
                "cpu_s": round(time.process_time() - cpu, 1),
            }


def _compare(
    config: RunConfig,
    models: DemoModels,
    best_recipe: MergeRecipe,
    *,
    grid_step: float,
    progress: bool,
) -> tuple[dict[str, tuple[Scored, Scored]], UniformResult]:
    """Sources, start point and best merge on both splits; the uniform grid on the search prompts.

    Returns ``({"style": (search, heldout), ..., "start": ..., "best merge": ...,
    "uniform best": ...}, uniform grid)``.
    """
    pool = open_pool(config)
    base = str(models.base)
    threads = None if config.generation is not None and config.generation.backend == "vllm" else 1
    search = SplitScorer(config, "search", threads=threads)
    heldout = SplitScorer(config, "heldout", threads=threads)
    try:
        uniform = best_uniform(
            search, pool, base, grid_values(*WEIGHT_BOUNDS, grid_step), progress=progress
        )
        recipes = {name: source_recipe(pool, base, name) for name in pool.source_names}
        recipes["start"] = start_recipe(config, pool)
        recipes["best merge"] = best_recipe
        scored = {name: (search(name, r), heldout(name, r)) for name, r in recipes.items()}
        scored["uniform best"] = (
            uniform.scored,
            heldout("uniform best", uniform_recipe(pool, base, uniform.weights)),
        )
    finally:  # both at once: vLLM tears down process-wide state with an in-process engine
        heldout.close()
        search.close()
    return scored, uniform


def run_demo(
    run_dir: str | Path = "runs/demo",
    *,
    trials: int | None = None,
    progress: bool = True,
    cache_dir: str | Path | None = None,
    workers: int = 1,
    export: bool = True,
    size: str = "full",
    seed: int = 0,
    grid_step: float = GRID_STEP,
    layer_granularity: int = LAYER_GRANULARITY,
    backend: str = "hf",
) -> DemoResult:
    """Run the demo end to end; writes ``demo_summary.json`` and returns it with the table.

    ``size``: ``"full"`` (the demo), ``"small"`` (less trained models that still tell the
    demo's story, for tests) or ``"tiny"`` (barely trained, for tests of the plumbing).
    ``seed`` seeds the models' training and the search. With one Ray worker (the
    default) the whole demo is reproducible; with more, trials are told to CMA-ES in the
    order they finish, so the best trial can differ from run to run. ``cache_dir`` defaults to
    ``$EVOMERGE_CACHE/demo`` or ``~/.cache/evomerge/demo``; models built with another
    size or seed replace the cached ones. ``grid_step`` spaces the uniform grid;
    ``layer_granularity`` sizes the search space's layer groups (see :func:`demo_run_config`).
    ``backend``: the generator (``hf``, or ``vllm``: vLLM's CPU build on a CPU machine).
    Raises SearchError (an EvomergeError) when the search or an evaluation fails.
    """
    start = time.perf_counter()
    phases = _Phases()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if size not in SIZES:
        raise ConfigError(f"Unknown demo size {size!r}. Available: {', '.join(SIZES)}")
    with phases("build"):
        models = build_demo_models(
            Path(cache_dir) if cache_dir else default_cache_dir(),
            size=dataclasses.replace(SIZES[size], seed=seed),
            progress=progress,
        )
    cfg_path = run_dir / "demo_run.yaml"
    run_config = demo_run_config(
        models,
        trials=trials or DEFAULT_TRIALS,
        workers=workers,
        seed=seed,
        layer_granularity=layer_granularity,
        backend=backend,
    )
    atomic_write(cfg_path, yaml.safe_dump(run_config, sort_keys=False, allow_unicode=True))
    with phases("search"):
        summary = run_search(cfg_path, run_dir=run_dir, progress=progress)
    run = open_run(run_dir)
    best_trial = run.study.best()
    if best_trial is None:
        raise SearchError(f"demo: the search finished no trial ({summary.stopped}); see {run_dir}")

    config = load_run_config(cfg_path)
    best_recipe = run.study.recipe(best_trial)
    with phases("baselines"):
        scored, uniform = _compare(
            config, models, best_recipe, grid_step=grid_step, progress=progress
        )
    sources = list(models.sources)
    rows = {n: scored[n] for n in sources}
    rows["start point"] = scored["start"]
    rows[f"uniform best {_weights_label(uniform.weights)}"] = scored["uniform best"]
    rows[f"best merge (trial {best_trial.number})"] = scored["best merge"]
    judges = list(config.judging.judges) if config.judging else []
    table = _table(rows, judges)

    baselines = {
        n: {"values": s.values, "scores": s.scores, "samples": s.samples}
        for n, (s, _) in scored.items()
        if n in sources
    }
    atomic_write(run_dir / BASELINES_JSON, json.dumps(baselines, ensure_ascii=False, indent=2))
    with phases("export_report"):
        if export:
            export_trial(
                run_dir,
                run_dir / "best_model",
                trial=best_trial.number,
                overwrite=True,
                progress=progress,
            )
        report = post_search(run_dir)  # the conflict analysis and the report, with the baselines
    counts = run.study.counts()
    best, start_value = scored["best merge"][0].value, scored["start"][0].value
    result = {
        "objective_max": objective_max(),
        "sources": {n: scored[n][0].value for n in sources},
        "start": start_value,
        "uniform_best": scored["uniform best"][0].value,
        "uniform_best_weights": uniform.weights,
        "best": best,
        "best_trial": best_trial.number,
        "search_gain": best / start_value - 1.0,
        "heldout": {
            "sources": {n: scored[n][1].value for n in sources},
            "start": scored["start"][1].value,
            "uniform_best": scored["uniform best"][1].value,
            "best": scored["best merge"][1].value,
        },
        "scores": {n: s.scores for n, (s, _) in scored.items()},
        "heldout_scores": {n: h.scores for n, (_, h) in scored.items()},
        "uniform_grid": uniform.grid,
        "n_complete": counts.complete,
        "n_failed": counts.failed,
        "n_pruned": counts.pruned,
        "beats_sources": all(best > scored[n][0].value for n in sources),
        "report": str(report),
        "exported": str(run_dir / "best_model") if export else None,
        "seconds": round(time.perf_counter() - start, 1),
        "phases": phases.seconds,
        "size": size,
        "seed": seed,
        "backend": backend,
        "data": str(demo_data_dir()),
    }
    atomic_write(run_dir / "demo_summary.json", json.dumps(result, ensure_ascii=False, indent=2))
    return DemoResult(summary=result, table=table, run_dir=run_dir)
