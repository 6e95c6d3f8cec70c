"""A run's components from its config: the model pool and the search space bound to it.

The pool and space modules (torch) are imported on first use, so reading a run (status,
report) does not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from evomerge.config import RunConfig

if TYPE_CHECKING:
    from evomerge.pool import ModelPool
    from evomerge.space import SearchSpace

__all__ = ["build_space", "open_pool"]


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
    from evomerge.space import SearchSpace

    pool = pool if pool is not None else open_pool(config)
    return SearchSpace(
        spec=config.space_spec(),
        num_layers=pool.num_layers,
        base=str(pool.base_path),
        sources=[pool.model_ref(i) for i in range(pool.num_sources)],
        names=pool.source_names,
        dtype=config.merge.dtype,
    )
