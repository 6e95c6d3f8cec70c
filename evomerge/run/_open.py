"""Opening a run directory for reading: its config and its study, as :class:`Run`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import optuna

from evomerge.config import RunConfig
from evomerge.exceptions import SearchError
from evomerge.run._dir import load_run_dir_config
from evomerge.run._storage import make_storage, storage_path
from evomerge.run._view import StudyView

__all__ = ["Run", "open_run"]


@dataclass(frozen=True)
class Run:
    """A run directory opened for reading: ``dir``, its ``config``, its ``study``."""

    dir: Path
    config: RunConfig
    study: StudyView


def open_run(run_dir: str | Path) -> Run:
    """The run in ``run_dir``, read-only (a driver may be writing it meanwhile).

    Raises ConfigError when ``run_dir`` is not a run directory, SearchError when it holds
    no study yet.
    """
    run_dir = Path(run_dir)
    config = load_run_dir_config(run_dir)
    path = storage_path(run_dir, config.search.storage)
    if not path.exists():
        raise SearchError(
            f"{run_dir} has no study yet ({path.name} is missing); start the search first"
        )
    storage = make_storage(run_dir, config.search.storage)
    try:
        study = optuna.load_study(study_name=config.name, storage=storage)
    except KeyError:
        raise SearchError(f"{path} holds no study named {config.name!r}") from None
    return Run(dir=run_dir, config=config, study=StudyView(study))
