"""The study's sampler and the distributions it samples the genome from.

Pruned trials (``search.pruning``). A trial stopped early has no value over all prompts;
the worker gives it ``pruned_value`` (:func:`evomerge.search._prune.pruned_value`): the
incumbent's value plus each judge's weighted mean difference between the trial and the
incumbent on the prompts both scored, held strictly below the incumbent's value. The
driver reports it as the trial's one intermediate value (step = prompts used), so it is
optuna's value of the PRUNED trial.

Why this value. The prompts come in one shuffled order, so the prompts a trial used are a
random sample of the prompt set, and the same first prompts for every trial. The trial's
raw mean on them carries those prompts' difficulty (the same offset for every pruned
trial, none for complete ones, so it would misrank pruned against complete trials); the
difference to the incumbent on the same prompts cancels it, and the objective is a
weighted sum of per-judge means, so the incumbent's value plus the weighted per-judge
mean differences estimates the trial's full value on the objective's own scale. The test
found the trial significantly worse than the incumbent on those prompts, so it is held
below the incumbent whatever the estimate says. It is biased low (a trial is stopped when
its first prompts went badly), which only makes the sampler less keen on hopeless
regions. The value's scale is the objective's; the last *per-prompt* score (what optuna
would otherwise take) is one prompt's and would rank the trial at random.

What each sampler does with it:

- ``cmaes``: ``consider_pruned_trials=True`` (optuna's option: a PRUNED trial enters its
  generation with its last intermediate value as its value), so a generation is any
  ``population_size`` finished trials, complete or pruned, ranked by value (a pruned one
  below the incumbent it was tested against, near its estimate among the others). With
  it off, pruned trials were left out and a generation waited for ``population_size``
  complete ones: at 70-85% pruned, 32 trials made at most one CMA-ES update
  (``benchmarks/RESULTS.md``). The option is applied only with pruning on; the state
  CMA-ES restores on resume is the same because the values are stored in the study.
- ``tpe``: optuna's rule: pruned trials rank below every complete trial, among
  themselves by how far they got, then by this value.
- ``random``: ignores values.
- ``nsga2`` (several objectives) is refused with pruning by the config.

``n_trials`` counts trials finished (complete, pruned or failed), so a pruned trial uses
one trial of the budget, as it uses one sample of its CMA-ES generation.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
import warnings
from typing import Any

import optuna
from optuna.distributions import FloatDistribution

from evomerge.config import SearchConfig
from evomerge.exceptions import SearchError
from evomerge.space import DataflowSpace, SearchSpace

__all__ = ["distributions", "make_sampler", "preload_sampler"]

#: Modules a sampler imports at its first informed ask (optuna imports them lazily): CMA-ES's
#: ``cmaes`` pulls in scipy.stats, about a second on a small CPU, paid mid-search otherwise.
LAZY_IMPORTS: dict[str, tuple[str, ...]] = {"cmaes": ("cmaes",)}


def preload_sampler(cfg: SearchConfig) -> threading.Thread:
    """Import what the configured sampler would import at its first informed ask, on a
    daemon thread (started; the driver calls this while its workers start)."""

    def load() -> None:
        for name in LAZY_IMPORTS.get(cfg.sampler, ()):
            # a missing package: the sampler itself reports it when used
            with contextlib.suppress(ImportError):
                importlib.import_module(name)

    thread = threading.Thread(target=load, name="evomerge-preload-sampler", daemon=True)
    thread.start()
    return thread


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
        with warnings.catch_warnings():  # consider_pruned_trials is "experimental"
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.CmaEsSampler(
                seed=seed,
                popsize=cfg.population_size,
                warn_independent_sampling=False,
                consider_pruned_trials=cfg.pruning.enabled,
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
