"""The study's sampler and the distributions it samples the genome from.

Pruned trials (``search.pruning``): every sampler ranks complete trials only, by their
values over all prompts. CMA-ES keeps optuna's default ``consider_pruned_trials=False``:
a pruned trial is left out of its generation, which is filled with further samples from
the same distribution until ``population_size`` trials are complete, so each update ranks
full evaluations of the one objective (a pruned trial's only number, its last
intermediate value, is one prompt's score and would rank it at random). The cost: a
generation takes more trials, so with a fixed ``n_trials`` the search makes fewer
updates, and the selection sees the survivors of a test against the incumbent rather
than a plain sample (slightly stronger selection). TPE uses pruned trials only below all
complete ones, ordered by how far they got; random ignores them. NSGA-II (several
objectives) is refused with pruning by the config.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import FloatDistribution

from evomerge.config import SearchConfig
from evomerge.exceptions import SearchError
from evomerge.space import DataflowSpace, SearchSpace

__all__ = ["distributions", "make_sampler"]


def make_sampler(cfg: SearchConfig, *, n_objectives: int, seed: int) -> optuna.samplers.BaseSampler:
    """The configured sampler. ``seed`` is the run's seed plus the number of trials already in
    the study, so a resumed run does not replay the samples of its first part."""
    name = cfg.sampler
    if name == "cmaes":
        if n_objectives > 1:
            raise SearchError(
                f"sampler cmaes optimizes one objective, the judges define {n_objectives}; "
                "set search.sampler to nsga2 or tpe for a Pareto front"
            )
        return optuna.samplers.CmaEsSampler(
            seed=seed, popsize=cfg.population_size, warn_independent_sampling=False
        )
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        kwargs: dict[str, Any] = {"seed": seed}
        if cfg.population_size is not None:
            kwargs["population_size"] = cfg.population_size
        return optuna.samplers.NSGAIISampler(**kwargs)
    raise SearchError(f"Unknown sampler {name!r}. Available: cmaes, tpe, random, nsga2")


def distributions(space: SearchSpace | DataflowSpace) -> dict[str, FloatDistribution]:
    """One float distribution per genome dimension, named as the space names them."""
    return {d.name: FloatDistribution(d.bounds.low, d.bounds.high) for d in space.dimensions}
