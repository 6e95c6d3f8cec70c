"""``evomerge merge``: one merge from a mergekit-format YAML, written as a HF checkpoint."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from evomerge.atomic import atomic_write, check_out_dir
from evomerge.dtypes import FLOAT_DTYPES, to_torch
from evomerge.exceptions import ConfigError, ExportError
from evomerge.export._checkpoint import write_checkpoint
from evomerge.export._sizes import parse_size
from evomerge.merge import MergeRecipe, check_recipe, iter_merged_tensors, pool_for_recipe

logger = logging.getLogger(__name__)

__all__ = ["check_tokenizer_source", "emit_mergekit_yaml", "merge_from_yaml", "recipe_out_dtype"]


def _dtype_field(recipe: MergeRecipe, field: str, *, source: str) -> torch.dtype | None:
    name = getattr(recipe, field)
    if name is None:
        return None
    return to_torch(name, allowed=FLOAT_DTYPES, field=f"{source}: {field}", error=ConfigError)


def recipe_out_dtype(recipe: MergeRecipe, *, source: str = "<recipe>") -> torch.dtype | None:
    """The dtype the merged checkpoint is written in: ``out_dtype``, else ``dtype``, else None.

    None means "as the merge yields it" (the base model's dtype). Raises
    :class:`ConfigError` naming ``source`` and the field for a dtype mergekit does not know.
    """
    dtype = _dtype_field(recipe, "dtype", source=source)
    return _dtype_field(recipe, "out_dtype", source=source) or dtype


def check_tokenizer_source(recipe: MergeRecipe, *, source: str = "<recipe>") -> None:
    """Only the base model's tokenizer is supported; anything else is a :class:`ConfigError`."""
    if recipe.tokenizer_source not in (None, "base"):
        raise ConfigError(
            f"{source}: tokenizer_source: {recipe.tokenizer_source!r} is not supported; only 'base' "
            "(copy the base model's tokenizer unchanged) is. Set it to base or remove the field."
        )


def emit_mergekit_yaml(recipe: MergeRecipe, path: str | Path) -> Path:
    """Write ``recipe`` as the mergekit YAML that reproduces it (atomically). Returns ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, recipe.to_mergekit_yaml())
    except OSError as err:
        raise ExportError(f"cannot write the mergekit YAML to {str(path)!r}: {err}") from err
    return path


def merge_from_yaml(
    config: str | Path,
    out_dir: str | Path,
    *,
    device: str = "cpu",
    allow_pickle: bool = False,
    shard_size: int | str = "5GB",
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Run the merge that the mergekit YAML ``config`` describes and write it to ``out_dir``.

    The YAML is mergekit's ``models:`` form (see :class:`MergeRecipe`); ``tokenizer_source``
    may only be ``base`` or absent. Tensors are merged one at a time on ``device`` and
    streamed into :func:`write_checkpoint` (shards of ``shard_size``), with the base's
    tokenizer and generation config and the recipe as ``mergekit_config.yml``. ``seed``
    drives the random methods (dare_*, della*). Raises :class:`ConfigError` for a bad
    config (naming the file and field), :class:`CheckpointError` for models that cannot be
    opened, :class:`MergeError` and :class:`ExportError`. Returns ``out_dir``.
    """
    source = str(config)
    recipe = MergeRecipe.from_yaml(config)
    check_recipe(recipe, source=source)  # ranges, parameters, inputs: before any model is opened
    check_tokenizer_source(recipe, source=source)
    out_dtype = recipe_out_dtype(recipe, source=source)
    parse_size(shard_size)
    check_out_dir(out_dir, overwrite=overwrite)  # fail before any merging work

    start = time.perf_counter()
    pool = pool_for_recipe(recipe, allow_pickle=allow_pickle)
    tensors = iter_merged_tensors(recipe, pool, device=device, seed=seed, progress=progress)
    out = write_checkpoint(
        tensors,
        out_dir,
        config=pool.config,
        base_dir=pool.base_path,
        shard_size=shard_size,
        out_dtype=out_dtype,
        merge_config_yaml=recipe.to_mergekit_yaml(),
        overwrite=overwrite,
    )
    logger.info(
        "merged %s (%s) into %s in %.1fs",
        source,
        recipe.merge_method,
        out,
        time.perf_counter() - start,
    )
    return out
