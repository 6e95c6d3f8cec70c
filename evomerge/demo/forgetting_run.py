"""The forgetting trade-off as the seed study ran it: a two-objective search plus its baselines.

``run_forgetting(run_yaml, run_dir)`` runs the search of ``examples/forgetting.yaml`` (or
any run whose sources are descendants of its base), then scores the seed's
hand-picked merges with the run's own evaluator, writes them as ``baselines.json`` (the
report marks them on the Pareto plot and in the front table) and writes the report:

- ``linear (equal)``: the base and every descendant with equal weights (written as task
  arithmetic with every weight 1/(n+1), the same weights);
- ``ties 0.5/0.5``, ``dare_linear 0.5/0.5``, ``dare_ties 0.5/0.5``: TIES, DARE and
  TIES-DARE over the base with weight 0.5 and density 0.5 per descendant.

The summary says which front points dominate the equal-weight Linear baseline (at least
as good on every objective, better on one).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evomerge.atomic import atomic_write
from evomerge.config import RunConfig, load_run_config
from evomerge.dtypes import to_torch
from evomerge.exceptions import SearchError
from evomerge.merge import MergeEngine, MergeRecipe, ModelEntry
from evomerge.orchestrate import post_search
from evomerge.run import BASELINES_JSON, open_pool, open_run
from evomerge.search import PipelineEvaluator, run_search

logger = logging.getLogger(__name__)

__all__ = ["ForgettingResult", "dominates", "run_forgetting", "score_recipes", "seed_baselines"]

LINEAR = "linear (equal)"


def seed_baselines(config: RunConfig) -> dict[str, MergeRecipe]:
    """The seed study's hand-picked merges of the run's base and sources, by name."""
    pool = open_pool(config)
    refs = [pool.model_ref(i) for i in range(pool.num_sources)]
    base = str(pool.base_path)
    share = 1.0 / (len(refs) + 1)
    out = {
        LINEAR: MergeRecipe(
            merge_method="task_arithmetic",
            base_model=base,
            models=tuple(ModelEntry(model=r, parameters={"weight": share}) for r in refs),
        )
    }
    for method in ("ties", "dare_linear", "dare_ties"):
        out[f"{method} 0.5/0.5"] = MergeRecipe(
            merge_method=method,
            base_model=base,
            models=tuple(
                ModelEntry(model=r, parameters={"weight": 0.5, "density": 0.5}) for r in refs
            ),
        )
    return out


def score_recipes(config: RunConfig, recipes: dict[str, MergeRecipe]) -> dict[str, dict[str, Any]]:
    """Each recipe evaluated in this process with the search's own evaluator (CPU); its merge
    engine is rebuilt for every method the recipes use (the search's knows only its own)."""
    evaluator = PipelineEvaluator(config, device="cpu")
    evaluator.engine = MergeEngine(
        evaluator.pool,
        device="cpu",
        dtype=to_torch(config.merge.dtype),
        seed=config.merge.seed,
        methods=sorted({r.merge_method for r in recipes.values()}),
    )
    out: dict[str, dict[str, Any]] = {}
    for name, recipe in recipes.items():
        r = evaluator.evaluate(-1, recipe)
        if r.error is not None or r.values is None:
            raise SearchError(f"forgetting: baseline {name!r} failed: {r.error}")
        out[name] = {
            "values": list(r.values),
            "scores": dict(r.scores),
            "recipe": recipe.to_mergekit_dict(),
        }
    evaluator.objective.close()
    return out


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """Whether ``a`` is at least as good as ``b`` on every objective and better on one."""
    sign = [1.0 if d == "maximize" else -1.0 for d in directions]
    ge = all(s * x >= s * y for s, x, y in zip(sign, a, b, strict=True))
    gt = any(s * x > s * y for s, x, y in zip(sign, a, b, strict=True))
    return ge and gt


@dataclass
class ForgettingResult:
    """The front (trial number -> values), the baselines and who dominates the Linear one."""

    run_dir: Path
    objective_names: list[str]
    front: dict[int, list[float]]
    baselines: dict[str, list[float]]
    dominating_linear: list[int]
    report: Path | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "objectives": self.objective_names,
            "front": {str(k): v for k, v in self.front.items()},
            "baselines": self.baselines,
            "dominating_linear": self.dominating_linear,
            "report": None if self.report is None else str(self.report),
        }


def run_forgetting(
    run_yaml: str | Path,
    run_dir: str | Path,
    *,
    max_trials: int | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> ForgettingResult:
    """Search, score the seed's baselines, write ``baselines.json`` and the report."""
    config = load_run_config(run_yaml)
    run_search(run_yaml, run_dir=run_dir, max_trials=max_trials, workers=workers, progress=progress)
    run_dir = Path(run_dir)
    baselines = score_recipes(config, seed_baselines(config))
    atomic_write(run_dir / BASELINES_JSON, json.dumps(baselines, ensure_ascii=False, indent=2))
    report = post_search(run_dir)
    view = open_run(run_dir).study
    front = {t.number: list(t.values) for t in view.pareto() if t.values is not None}
    directions = view.directions
    linear = baselines[LINEAR]["values"]
    result = ForgettingResult(
        run_dir=run_dir,
        objective_names=list(view.objective_names),
        front=front,
        baselines={k: v["values"] for k, v in baselines.items()},
        dominating_linear=[n for n, v in front.items() if dominates(v, linear, directions)],
        report=report,
    )
    atomic_write(run_dir / "forgetting_summary.json", json.dumps(result.to_dict(), indent=2))
    return result
