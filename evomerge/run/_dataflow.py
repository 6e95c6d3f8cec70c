"""A data-flow run's sources, resolved from its config, and its space bound to them.

A source named in ``space.sources`` (or, by default, every ``models.sources`` entry)
becomes a :class:`~evomerge.merge.PathSource`: a model of the run (its directory, or
``BASE+ADAPTER`` for a LoRA adapter, as mergekit writes it), a mergekit recipe file, or a
previous run's trial (its recipe, merged with that run's merge seed: the hybrid of a
parameter-space merge and data-flow merging). The sources' layers are checked to fit one
residual stream before any worker starts (a ConfigError naming ``space.sources``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from evomerge.config import RunConfig
from evomerge.exceptions import ConfigError, SearchError
from evomerge.merge import MergeRecipe, check_layers, open_path_sources
from evomerge.merge.path import PathSource
from evomerge.space import DataflowSourceSpec, DataflowSpace, DataflowSpec, default_source_names

logger = logging.getLogger(__name__)

__all__ = ["build_dataflow_space", "resolve_path_sources"]


def _model_ref(config: RunConfig, path: Path) -> str:
    if (path / "adapter_config.json").is_file():
        return f"{config.models.base}+{path}"
    return str(path)


def _from_run(s: DataflowSourceSpec, field: str) -> PathSource:
    from evomerge.run._open import open_run

    assert s.run is not None
    try:
        run = open_run(s.run)
        trial = run.study.pick(s.trial)
        recipe = run.study.recipe(trial)
    except (ConfigError, SearchError) as err:
        raise ConfigError(f"{field}.run: {s.run}: {err}") from None
    logger.info("source %s: trial %d of the run in %s", s.name, trial.number, s.run)
    return PathSource(recipe=recipe, seed=run.config.merge.seed)


def resolve_path_sources(config: RunConfig, spec: DataflowSpec) -> dict[str, PathSource]:
    """``name -> PathSource`` in the space's order. Raises ConfigError naming the field."""
    models = config.models
    by_name = dict(zip(models.source_names(), models.sources, strict=True))
    if not spec.sources:
        names = default_source_names(list(by_name))
        return {
            n: PathSource(model=_model_ref(config, p))
            for n, p in zip(names, by_name.values(), strict=True)
        }
    out: dict[str, PathSource] = {}
    for i, s in enumerate(spec.sources):
        field = f"space.sources.{i}"
        if s.model is not None:
            path = models.base if s.model == "base" else by_name[s.model]
            out[s.name] = PathSource(model=_model_ref(config, path))
        elif s.recipe is not None:
            out[s.name] = PathSource(recipe=MergeRecipe.from_yaml(s.recipe), seed=config.merge.seed)
        else:
            out[s.name] = _from_run(s, field)
    return out


def build_dataflow_space(config: RunConfig, spec: DataflowSpec) -> DataflowSpace:
    """The run's data-flow space: its sources resolved, opened (headers only) and checked."""
    sources = resolve_path_sources(config, spec)
    weights = open_path_sources(sources, allow_pickle=config.models.allow_pickle)
    embedding = spec.embedding or next(iter(sources))
    check_layers(weights, embedding, field="space.sources")
    return DataflowSpace(
        spec=spec, sources=sources, num_layers={n: w.num_layers for n, w in weights.items()}
    )
