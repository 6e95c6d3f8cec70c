"""``evomerge export``: a search trial's merge as a Hugging Face checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from evomerge.exceptions import ExportError

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

logger = logging.getLogger(__name__)

__all__ = ["export_trial", "pick_trial"]

MERGEKIT_YAML = "mergekit.yaml"


def pick_trial(study: optuna.Study, trial: str | int) -> FrozenTrial:
    """``"best"`` (one objective: the best value; several: the Pareto trial best in the
    first objective) or a trial number, which must be COMPLETE."""
    import optuna
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        raise ExportError("the study has no complete trial yet; nothing to export")
    if str(trial) == "best":
        if len(study.directions) == 1:
            return study.best_trial
        maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
        return sorted(study.best_trials, key=lambda t: -t.values[0] if maximize else t.values[0])[0]
    try:
        number = int(trial)
    except ValueError:
        raise ExportError(f"--trial must be 'best' or a trial number, got {trial!r}") from None
    found = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if found is None:
        raise ExportError(f"no trial {number} in the study (trials 0..{len(study.trials) - 1})")
    if found.state != TrialState.COMPLETE:
        err = found.user_attrs.get("error", "")
        raise ExportError(
            f"trial {number} is {found.state.name}{': ' + err if err else ''}; export a complete trial"
        )
    return found


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
    """Write trial ``trial`` of the search in ``run_dir`` to ``out_dir``.

    The recipe is merged tensor by tensor with :func:`evomerge.merge.iter_merged_tensors`
    using the search's ``merge.seed`` (DARE drops the same coordinates as in the search)
    and written with :func:`evomerge.export.write_checkpoint`, with ``mergekit.yaml`` (its
    recipe: ``mergekit-yaml`` reproduces the weights for deterministic methods) and a
    ``README.md`` model card with the search summary. Atomic. Returns ``out_dir``.

    Raises ExportError (no such trial, not complete, unwritable output), ConfigError /
    SearchError when ``run_dir`` is not a search run directory.
    """
    from evomerge.export._checkpoint import write_checkpoint
    from evomerge.merge import iter_merged_tensors
    from evomerge.merge.recipe import MergeRecipe
    from evomerge.search._build import open_pool
    from evomerge.search._card import model_card
    from evomerge.search._status import load_run_study

    config, study = load_run_study(run_dir)
    chosen = pick_trial(study, trial)
    data = chosen.user_attrs.get("recipe")
    if data is None:
        raise ExportError(f"trial {chosen.number} has no recorded recipe")
    recipe = MergeRecipe.from_mergekit_dict(data, source=f"{run_dir}: trial {chosen.number}")
    pool = open_pool(config)
    yaml_text = recipe.to_mergekit_yaml()
    logger.info("exporting trial %d (%s) to %s", chosen.number, recipe.merge_method, out_dir)
    tensors = iter_merged_tensors(
        recipe, pool, device=device, seed=config.merge.seed, progress=progress
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
            "README.md": model_card(config, study, chosen, recipe),
        },
        overwrite=overwrite,
        progress=progress,
    )
