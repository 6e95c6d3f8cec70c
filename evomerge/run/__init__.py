"""A run seen from outside: its directory, its study, "the best trial", status, model card.

::

    run = open_run("runs/demo")          # read-only: works while the driver writes
    best = run.study.best()              # the one definition of "best" (see StudyView)
    front = run.study.pareto()           # best first
    trial = run.study.pick("best")       # or a trial number; must be COMPLETE
    recipe = run.study.recipe(trial)     # its MergeRecipe
    print(format_status(study_status("runs/demo")))

Trial and study attribute names are in :mod:`evomerge.run.attrs`. The search driver, ``evomerge status``, ``report``, ``export`` and the demo all read a run
through this package; none of them reads Optuna's internals or another package's private
modules. Below it: config, space, judge, generate, merge, pool; above it: search, export,
report (see ARCHITECTURE.md).
"""

from evomerge.run import attrs
from evomerge.run._build import build_run_space, build_space, open_pool
from evomerge.run._card import model_card
from evomerge.run._dir import (
    ANALYSIS_DIR,
    BASELINES_JSON,
    MERGE_CACHE_DIR,
    REPORT_DIR,
    RUN_YAML,
    check_same_run,
    driver_lock,
    load_run_dir_config,
    repair_journal,
    stored_canonical,
    write_run_yaml,
)
from evomerge.run._open import Run, open_run
from evomerge.run._path_card import path_card
from evomerge.run._status import compact_setting, format_status, study_status
from evomerge.run._storage import (
    INTERRUPTED_ERROR,
    count_finished,
    is_finished,
    make_driver_storage,
    make_storage,
    open_study,
    recover_interrupted,
    storage_path,
)
from evomerge.run._view import Counts, StudyView, rank_key

__all__ = [
    "ANALYSIS_DIR",
    "BASELINES_JSON",
    "INTERRUPTED_ERROR",
    "MERGE_CACHE_DIR",
    "REPORT_DIR",
    "RUN_YAML",
    "Counts",
    "Run",
    "StudyView",
    "attrs",
    "build_run_space",
    "build_space",
    "check_same_run",
    "compact_setting",
    "count_finished",
    "driver_lock",
    "format_status",
    "is_finished",
    "load_run_dir_config",
    "make_driver_storage",
    "make_storage",
    "model_card",
    "open_pool",
    "open_run",
    "open_study",
    "path_card",
    "rank_key",
    "recover_interrupted",
    "repair_journal",
    "storage_path",
    "stored_canonical",
    "study_status",
    "write_run_yaml",
]
