"""The names under which a run's study keeps its facts (optuna user attributes).

The driver writes them; status, report, export and the model card read them. Readable in
optuna-dashboard.

Trial attributes::

    recipe       the trial's MergeRecipe as a mergekit dict (set when the trial is asked)
    scores       per-judge mean scores            samples    a few {question, answer}
    timings      {merge_s, generate_s, judge_s, total_s}
    worker       worker index                     node_id    the Ray node that ran it
    attempts     evaluations tried                error / traceback   why it failed
    errors       why each earlier attempt failed (a trial retried after a worker died)
    interrupted  True on a trial the driver lost (killed, Ctrl-C): its parameters are
                 re-enqueued and it does not count as finished
    retry_of     on a re-enqueued trial: the number of the interrupted trial
    start_point  True on the enqueued start point x0

Study attributes: ``objective_names``, ``space`` (the space's name), ``sampler``,
``genome`` (the parameter names in genome order), ``n_target`` (finished trials to reach).
"""

from __future__ import annotations

__all__ = [
    "ATTEMPTS",
    "ERROR",
    "ERRORS",
    "GENOME",
    "INTERRUPTED",
    "NODE_ID",
    "N_TARGET",
    "OBJECTIVE_NAMES",
    "RECIPE",
    "RETRY_OF",
    "SAMPLER",
    "SAMPLES",
    "SCORES",
    "SPACE",
    "START_POINT",
    "TIMINGS",
    "TRACEBACK",
    "WORKER",
]

RECIPE = "recipe"
SCORES = "scores"
SAMPLES = "samples"
TIMINGS = "timings"
WORKER = "worker"
NODE_ID = "node_id"
ATTEMPTS = "attempts"
ERROR = "error"
ERRORS = "errors"
TRACEBACK = "traceback"
INTERRUPTED = "interrupted"
RETRY_OF = "retry_of"
START_POINT = "start_point"

OBJECTIVE_NAMES = "objective_names"
SPACE = "space"
SAMPLER = "sampler"
GENOME = "genome"
N_TARGET = "n_target"
