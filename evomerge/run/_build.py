"""A run's components from its config: the model pool and the search space bound to it.

The pool and space modules (torch) are imported on first use, so reading a run (status,
report) does not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from evomerge.config import RunConfig
from evomerge.exceptions import ConfigError

if TYPE_CHECKING:
    from evomerge.pool import ModelPool
    from evomerge.space import DataflowSpace, SearchSpace

__all__ = ["build_run_space", "build_space", "open_pool"]


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


def build_run_space(config: RunConfig) -> SearchSpace | DataflowSpace:
    """The run's space, either kind: :func:`build_space` for a weight merge, or the
    data-flow space bound to its resolved sources (``type: dataflow``; no pool is opened,
    the sources' layer counts may differ)."""
    from evomerge.space import DataflowSpec

    spec = config.space_spec()
    if isinstance(spec, DataflowSpec):
        from evomerge.run._dataflow import build_dataflow_space

        return build_dataflow_space(config, spec)
    return build_space(config)


def build_space(config: RunConfig, pool: ModelPool | None = None) -> SearchSpace:
    """The run's weight-merge search space bound to its models: recipes reference
    ``pool.model_ref(i)`` for sources and the base model's path, as mergekit needs to
    reproduce them. ConfigError for a data-flow run (see :func:`build_run_space`)."""
    from evomerge.space import SearchSpace, SpaceSpec

    spec = config.space_spec()
    if not isinstance(spec, SpaceSpec):
        raise ConfigError(
            f"space: {spec.name!r} is a data-flow space (layer paths), not a weight merge; "
            "this step needs a parameter-space run"
        )
    pool = pool if pool is not None else open_pool(config)
    return SearchSpace(
        spec=spec,
        num_layers=pool.num_layers,
        base=str(pool.base_path),
        sources=[pool.model_ref(i) for i in range(pool.num_sources)],
        names=pool.source_names,
        dtype=config.merge.dtype,
    )
