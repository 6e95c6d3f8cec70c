"""lm-evaluation-harness tasks as a judge (``type: lm_eval``), run offline on the live model.

- :class:`LMEvalJudge` / :class:`LMEvalOptions`: the judge and its options;
- :class:`HarnessTasks`: tasks built once per worker, evaluated per trial;
- :func:`local_files`: the ``custom_dataset`` loader task YAMLs use for data next to them;
- :func:`bundled_tasks_dir`: the shipped tasks (``persona_facts_mc``, ``persona_register``,
  ``general_chat_mc``).

Importing this package does not import ``lm_eval`` (an extra: ``pip install 'evomerge[lmeval]'``).
"""

from evomerge.judge.harness._data import (
    SUPPORTED_SUFFIXES,
    bundled_tasks_dir,
    local_files,
    read_records,
)
from evomerge.judge.harness._judge import LiveHFModel, LMEvalJudge, LMEvalOptions
from evomerge.judge.harness._local import DEFINE_LOCALLY, PACKAGED_BUILDERS
from evomerge.judge.harness._tasks import DEFAULT_FEWSHOT_SEED, HarnessTasks, metric_value

__all__ = [
    "DEFAULT_FEWSHOT_SEED",
    "DEFINE_LOCALLY",
    "PACKAGED_BUILDERS",
    "SUPPORTED_SUFFIXES",
    "HarnessTasks",
    "LMEvalJudge",
    "LMEvalOptions",
    "LiveHFModel",
    "bundled_tasks_dir",
    "local_files",
    "metric_value",
    "read_records",
]
