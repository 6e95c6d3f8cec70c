"""Search spaces: a space as written in YAML, and the genome of a space bound to models.

::

    spec = load_space_spec("ties_layerwise", overrides={"layer_granularity": 2})
    space = SearchSpace(spec=spec, num_layers=32, base="/m/base", sources=["/m/a", "/m/b"])
    recipe = space.decode(space.x0())          # a MergeRecipe; space.encode(recipe) -> x

- :class:`SpaceSpec` / :func:`load_space_spec`: a validated space (shipped by name, a YAML
  file or an inline mapping); :func:`shipped_space_names`.
- :class:`SearchSpace`: the genome ``x in R^d`` <-> :class:`~evomerge.merge.MergeRecipe`.
- :class:`DataflowSpec` / :class:`DataflowSpace`: the data-flow space (``type: dataflow``),
  genome ``x`` <-> :class:`~evomerge.merge.LayerPath`, a path through the sources' layers.
- :func:`format_genome_name` / :func:`parse_genome_name` (and the data-flow genes'
  :func:`format_slot_name`, :func:`format_scale_name`, :func:`parse_path_gene_name`): the
  genome's parameter names, written and read by these functions only.
"""

from evomerge.space._dataflow import DataflowSpace, Gene
from evomerge.space._dataflow_spec import (
    DataflowSourceSpec,
    DataflowSpec,
    ScaleSpec,
    default_source_names,
)
from evomerge.space._dataflow_spec import run_problems as dataflow_run_problems
from evomerge.space._names import (
    GenomeName,
    PathGeneName,
    format_genome_name,
    format_scale_name,
    format_slot_name,
    parse_genome_name,
    parse_path_gene_name,
)
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
    "DataflowSourceSpec",
    "DataflowSpace",
    "DataflowSpec",
    "Dimension",
    "Gene",
    "GenomeName",
    "PathGeneName",
    "ScaleSpec",
    "SearchSpace",
    "SpaceSpec",
    "dataflow_run_problems",
    "default_source_names",
    "format_genome_name",
    "format_scale_name",
    "format_slot_name",
    "load_space_spec",
    "parse_genome_name",
    "parse_path_gene_name",
    "shipped_space_names",
    "shipped_spaces_dir",
]
