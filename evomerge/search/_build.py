"""Builders that turn a RunConfig into components: pool, bound search space, evaluator."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evomerge.config import RunConfig
from evomerge.exceptions import ConfigError
from evomerge.search._space import SearchSpace
from evomerge.search._types import TrialEvaluator

if TYPE_CHECKING:
    from evomerge.pool import ModelPool

logger = logging.getLogger(__name__)

__all__ = ["PIPELINE_FACTORY", "build_evaluator", "build_space", "open_pool", "resolve_factory"]

#: The evaluator used when a run config has no ``evaluator:`` section.
PIPELINE_FACTORY = "evomerge.search._pipeline:build_pipeline_evaluator"


def open_pool(config: RunConfig) -> ModelPool:
    """The run's model pool (reads configs and file headers only)."""
    from evomerge.pool import ModelPool

    m = config.models
    return ModelPool.open(
        m.base,
        m.sources,
        names=m.names,
        allow_pickle=m.allow_pickle,
        trust_remote_code=m.trust_remote_code,
    )


def build_space(config: RunConfig, pool: ModelPool | None = None) -> SearchSpace:
    """The run's search space bound to its models: recipes reference ``pool.model_ref(i)``
    for sources and the base model's path, as mergekit needs to reproduce them."""
    pool = pool if pool is not None else open_pool(config)
    return SearchSpace(
        spec=config.space_spec(),
        num_layers=pool.num_layers,
        base=str(pool.base_path),
        sources=[pool.model_ref(i) for i in range(pool.num_sources)],
        names=pool.source_names,
        dtype=config.merge.dtype,
    )


def resolve_factory(spec: str) -> Callable[..., TrialEvaluator]:
    """Import ``"package.module:callable"``; a ConfigError says what is missing."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(
            f"evaluator.factory: cannot import module {module_name!r} ({err})"
        ) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"evaluator.factory: {module_name!r} has no callable {attr!r}")
    return factory


def build_evaluator(
    config: RunConfig, *, device: str, worker_index: int, run_dir: Path
) -> TrialEvaluator:
    """The worker's evaluator: ``config.evaluator``'s factory, or the generate-and-judge pipeline.

    A factory is called as ``factory(config, device=..., worker_index=..., run_dir=..., **options)``.
    """
    spec = config.evaluator.factory if config.evaluator is not None else PIPELINE_FACTORY
    options: dict[str, Any] = dict(config.evaluator.options) if config.evaluator is not None else {}
    factory = resolve_factory(spec)
    evaluator = factory(
        config, device=device, worker_index=worker_index, run_dir=run_dir, **options
    )
    names, directions = list(evaluator.objective_names), list(evaluator.directions)
    bad = [d for d in directions if d not in ("maximize", "minimize")]
    if not names or len(names) != len(directions) or bad:
        raise ConfigError(
            f"evaluator {spec}: needs one direction ('maximize'|'minimize') per objective, "
            f"got names={names}, directions={directions}"
        )
    return evaluator
