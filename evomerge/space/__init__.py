"""Search spaces: a space as written in YAML, and the genome of a space bound to models.

::

    spec = load_space_spec("ties_layerwise", overrides={"layer_granularity": 2})
    space = SearchSpace(spec=spec, num_layers=32, base="/m/base", sources=["/m/a", "/m/b"])
    recipe = space.decode(space.x0())          # a MergeRecipe; space.encode(recipe) -> x

- :class:`SpaceSpec` / :func:`load_space_spec`: a validated space (shipped by name, a YAML
  file or an inline mapping); :func:`shipped_space_names`.
- :class:`SearchSpace`: the genome ``x in R^d`` <-> :class:`~evomerge.merge.MergeRecipe`.
- :func:`format_genome_name` / :func:`parse_genome_name`: the genome's parameter names
  (``g{group}.{filter}.{source}.{param}``), written and read by these two only.
"""

from evomerge.space._names import GenomeName, format_genome_name, parse_genome_name
from evomerge.space._space import Dimension, SearchSpace
from evomerge.space._spec import (
    Bounds,
    SpaceSpec,
    load_space_spec,
    shipped_space_names,
    shipped_spaces_dir,
)

__all__ = [
    "Bounds",
    "Dimension",
    "GenomeName",
    "SearchSpace",
    "SpaceSpec",
    "format_genome_name",
    "load_space_spec",
    "parse_genome_name",
    "shipped_space_names",
    "shipped_spaces_dir",
]
