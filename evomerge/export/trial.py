"""``evomerge export``: a search trial's merge as a Hugging Face checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path

from optuna.trial import FrozenTrial

from evomerge.exceptions import ExportError, SearchError
from evomerge.export._checkpoint import write_checkpoint
from evomerge.merge import iter_merged_tensors
from evomerge.run import Run, model_card, open_pool, open_run, path_card
from evomerge.run import attrs as A

logger = logging.getLogger(__name__)

__all__ = ["MERGEKIT_YAML", "export_trial"]

MERGEKIT_YAML = "mergekit.yaml"


def export_trial(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    trial: str | int = "best",
    device: str = "cpu",
    shard_size: str = "5GB",
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write trial ``trial`` (``"best"``: :meth:`evomerge.run.StudyView.best`, or a
    number) of the search in ``run_dir`` to ``out_dir``.

    A data-flow trial is written by :func:`evomerge.export.write_path_checkpoint` (the path
    as a standard checkpoint, scales folded, its mergekit passthrough YAML). A recipe is
    merged tensor by tensor with :func:`evomerge.merge.iter_merged_tensors`
    using the search's ``merge.seed`` (DARE drops the same coordinates as in the search)
    and written with :func:`evomerge.export.write_checkpoint`, with ``mergekit.yaml`` (its
    recipe: ``mergekit-yaml`` reproduces the weights for deterministic methods) and a
    ``README.md`` model card with the search summary. Atomic. Returns ``out_dir``.

    Raises ExportError (no such trial, not complete, no recipe, unwritable output),
    ConfigError / SearchError when ``run_dir`` is not a search run directory.
    """
    run = open_run(run_dir)
    try:
        chosen = run.study.pick(trial)
        if A.PATH in chosen.user_attrs:
            return _export_path(run, chosen, out_dir, shard_size, overwrite, progress)
        recipe = run.study.recipe(chosen)
    except SearchError as err:
        raise ExportError(f"{run_dir}: cannot export trial {trial!r}: {err}") from None
    pool = open_pool(run.config)
    yaml_text = recipe.to_mergekit_yaml()
    logger.info("exporting trial %d (%s) to %s", chosen.number, recipe.merge_method, out_dir)
    tensors = iter_merged_tensors(
        recipe, pool, device=device, seed=run.config.merge.seed, progress=progress
    )
    return write_checkpoint(
        tensors,
        out_dir,
        config=pool.config,
        base_dir=pool.base_path,
        shard_size=shard_size,
        merge_config_yaml=yaml_text,
        extra_files={
            MERGEKIT_YAML: yaml_text,
            "README.md": model_card(run.config, run.study, chosen, recipe),
        },
        overwrite=overwrite,
        progress=progress,
    )


def _export_path(
    run: Run,
    chosen: FrozenTrial,
    out_dir: str | Path,
    shard_size: str,
    overwrite: bool,
    progress: bool,
) -> Path:
    """A data-flow trial: its path as a standard checkpoint (scales folded), its
    ``mergekit.yaml`` (passthrough slices) and the model card."""
    from evomerge.export._path import write_path_checkpoint

    path = run.study.path(chosen)
    logger.info("exporting trial %d (a %d-layer path) to %s", chosen.number, len(path), out_dir)
    return write_path_checkpoint(
        path,
        out_dir,
        allow_pickle=run.config.models.allow_pickle,
        shard_size=shard_size,
        extra_files={"README.md": path_card(run.config, run.study, chosen, path)},
        overwrite=overwrite,
        progress=progress,
    )
