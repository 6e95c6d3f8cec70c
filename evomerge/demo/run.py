"""``evomerge demo``: the whole pipeline on an embedded default, in a few minutes on a CPU.

1. build (or reuse) the tiny models: a char-level Llama base and two LoRA fine-tunes,
   ``style`` (the persona's ojousama register) and ``facts`` (her facts, plain register);
2. write ``RUN_DIR/demo_run.yaml`` and run a real ``evomerge search`` on it: local Ray,
   CMA-ES over per-layer-group task-arithmetic weights, the ``hf`` generator, local judges
   (style markers + fact recall + length);
3. score both sources and the best merge with the same generator, prompts and judges, on
   the search prompts and on held-out prompts, print the table and write
   ``demo_summary.json`` and ``baselines.json``;
4. export the best merge (:meth:`evomerge.run.StudyView.best`, as every command) and run
   the post-search steps (conflict analysis and report) with the baselines in place.

Re-running on the same run directory resumes the search (finished trials are kept).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from evomerge.atomic import atomic_write
from evomerge.config import RunConfig, load_run_config
from evomerge.demo.check import LENGTH_RANGE, STYLE_MARKERS
from evomerge.demo.data import demo_data_dir, prompts_path
from evomerge.demo.models import DemoModels, build_demo_models, default_cache_dir
from evomerge.exceptions import SearchError
from evomerge.export import export_trial
from evomerge.merge import MergeRecipe, ModelEntry
from evomerge.orchestrate import post_search
from evomerge.pool import ModelPool
from evomerge.run import BASELINES_JSON, open_pool, open_run
from evomerge.search import PipelineEvaluator, run_search

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_TRIALS", "DemoResult", "demo_run_config", "run_demo"]

DEFAULT_TRIALS = 40
MAX_NEW_TOKENS = 40


def demo_run_config(models: DemoModels, *, trials: int, workers: int = 2) -> dict[str, Any]:
    """The demo's run.yaml as a mapping: every field a real search uses, nothing hidden."""
    return {
        "name": "demo",
        "models": {
            "base": str(models.base),
            "sources": [str(models.style), str(models.facts)],
            "names": ["style", "facts"],
        },
        "space": {
            "name": "task_arithmetic_layerwise",
            "description": "Task-vector weight per source and group of 2 layers (the demo's space).",
            "method": "task_arithmetic",
            "layer_granularity": 2,
            "params": {"weight": {"low": 0.0, "high": 1.5}},
            "normalize": False,
        },
        "search": {
            "sampler": "cmaes",
            "n_trials": trials,
            "population_size": 8,
            "seed": 0,
            "retries": 1,
        },
        "merge": {"dtype": "float32", "seed": 0},
        "generation": {
            "backend": "hf",
            "params": {
                "max_new_tokens": MAX_NEW_TOKENS,
                "temperature": 0.0,
                "stop": ["\n"],
                "batch_size": 24,
            },
            "prompts": str(prompts_path("search")),
            "heldout_prompts": str(prompts_path("heldout")),
        },
        "judging": {
            "judges": {
                "style": {
                    "type": "style_markers",
                    "weight": 1.0,
                    "options": {"markers": {STYLE_MARKERS: 1.0}},
                },
                "facts": {"type": "fact_recall", "weight": 1.0},
                "length": {
                    "type": "length",
                    "weight": 1.0,
                    "options": {"min_chars": LENGTH_RANGE[0], "max_chars": LENGTH_RANGE[1]},
                },
            },
        },
        "workers": {"num": workers, "device": "cpu", "cpus_per_worker": 1},
        "analysis": {"top_k": 2},
    }


@dataclass
class DemoResult:
    """``summary``: the content of ``demo_summary.json``; ``table``: sources vs best merge."""

    summary: dict[str, Any]
    table: str
    run_dir: Path

    def format(self) -> str:
        s = self.summary
        verdict = "beats" if s["beats_sources"] else "does NOT beat"
        held = ", ".join(f"{n} {v:.3f}" for n, v in s["heldout"]["sources"].items())
        return "\n".join(
            [
                self.table,
                "",
                f"best merge (trial {s['best_trial']}) {verdict} both sources on the search prompts; "
                f"held-out: best {s['heldout']['best']:.3f} vs sources {held}",
                f"report:   {s['report']}",
                f"exported: {s['exported']}",
                f"summary:  {self.run_dir / 'demo_summary.json'} ({s['seconds']} s in all)",
            ]
        )


@dataclass
class _Scored:
    values: list[float]
    scores: dict[str, float]
    samples: list[dict[str, str]]


def _source_recipe(models: DemoModels, pool: ModelPool, which: str) -> MergeRecipe:
    """A one-hot task-arithmetic recipe: exactly source ``which`` (base + its task vector)."""
    entries = tuple(
        ModelEntry(model=pool.model_ref(i), parameters={"weight": 1.0 if name == which else 0.0})
        for i, name in enumerate(pool.source_names)
    )
    return MergeRecipe(merge_method="task_arithmetic", base_model=str(models.base), models=entries)


def _score_split(
    config: RunConfig, recipes: dict[str, MergeRecipe], split: str
) -> dict[str, _Scored]:
    """Evaluate each recipe in-process with the search's own evaluator, on one prompt split."""
    gen = config.generation
    if gen is None:
        raise SearchError("demo: the run config has no generation section")
    if split == "heldout":
        gen = gen.model_copy(update={"prompts": gen.heldout_prompts})
    evaluator = PipelineEvaluator(config.model_copy(update={"generation": gen}), device="cpu")
    out: dict[str, _Scored] = {}
    for name, recipe in recipes.items():
        r = evaluator.evaluate(-1, recipe)
        if not r.ok or r.values is None:
            raise SearchError(f"demo: evaluating {name} on {split} prompts failed: {r.error}")
        out[name] = _Scored(values=r.values, scores=r.scores, samples=r.samples)
    return out


def _table(search: dict[str, _Scored], heldout: dict[str, _Scored], judges: list[str]) -> str:
    head = (
        f"{'model':<14}" + "".join(f"{j:>9}" for j in judges) + f"{'objective':>11}{'held-out':>10}"
    )
    lines = [head, "-" * len(head)]
    for name, s in search.items():
        row = f"{name:<14}" + "".join(f"{s.scores.get(j, math.nan):9.3f}" for j in judges)
        lines.append(row + f"{s.values[0]:11.3f}{heldout[name].values[0]:10.3f}")
    return "\n".join(lines)


def run_demo(
    run_dir: str | Path = "runs/demo",
    *,
    trials: int | None = None,
    progress: bool = True,
    cache_dir: str | Path | None = None,
    workers: int = 2,
    export: bool = True,
    size: str = "full",
) -> DemoResult:
    """Run the demo end to end; writes ``demo_summary.json`` and returns it with the table.

    ``size="tiny"`` builds barely trained models (for tests of the pipeline's plumbing);
    ``cache_dir`` defaults to ``$EVOMERGE_CACHE/demo`` or ``~/.cache/evomerge/demo``.
    Raises SearchError (an EvomergeError) when the search or an evaluation fails.
    """
    start = time.perf_counter()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    models = build_demo_models(
        Path(cache_dir) if cache_dir else default_cache_dir(), size=size, progress=progress
    )
    cfg_path = run_dir / "demo_run.yaml"
    run_config = demo_run_config(models, trials=trials or DEFAULT_TRIALS, workers=workers)
    atomic_write(cfg_path, yaml.safe_dump(run_config, sort_keys=False, allow_unicode=True))
    summary = run_search(cfg_path, run_dir=run_dir, progress=progress)
    run = open_run(run_dir)
    best = run.study.best()
    if best is None:
        raise SearchError(f"demo: the search finished no trial ({summary.stopped}); see {run_dir}")

    config = load_run_config(cfg_path)
    pool = open_pool(config)
    best_recipe = run.study.recipe(best)
    recipes = {name: _source_recipe(models, pool, name) for name in pool.source_names}
    recipes["best merge"] = best_recipe
    search_scores = _score_split(config, recipes, "search")
    heldout_scores = _score_split(config, recipes, "heldout")
    judges = list(config.judging.judges) if config.judging else []
    table = _table(search_scores, heldout_scores, judges)

    baselines = {
        n: {"values": s.values, "scores": s.scores, "samples": s.samples}
        for n, s in search_scores.items()
        if n != "best merge"
    }
    atomic_write(run_dir / BASELINES_JSON, json.dumps(baselines, ensure_ascii=False, indent=2))
    if export:
        export_trial(
            run_dir, run_dir / "best_model", trial=best.number, overwrite=True, progress=progress
        )
    report = post_search(run_dir)  # the conflict analysis and the report, with the baselines
    counts = run.study.counts()
    result = {
        "sources": {n: search_scores[n].values[0] for n in pool.source_names},
        "best": search_scores["best merge"].values[0],
        "best_trial": best.number,
        "heldout": {
            "sources": {n: heldout_scores[n].values[0] for n in pool.source_names},
            "best": heldout_scores["best merge"].values[0],
        },
        "scores": {n: s.scores for n, s in search_scores.items()},
        "heldout_scores": {n: s.scores for n, s in heldout_scores.items()},
        "n_complete": counts.complete,
        "n_failed": counts.failed,
        "beats_sources": all(
            search_scores["best merge"].values[0] > search_scores[n].values[0]
            for n in pool.source_names
        ),
        "report": str(report),
        "exported": str(run_dir / "best_model") if export else None,
        "seconds": round(time.perf_counter() - start, 1),
        "data": str(demo_data_dir()),
    }
    atomic_write(run_dir / "demo_summary.json", json.dumps(result, ensure_ascii=False, indent=2))
    return DemoResult(summary=result, table=table, run_dir=run_dir)
