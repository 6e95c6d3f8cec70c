"""The names under which a run's study keeps its facts (optuna user attributes).

The driver writes them; status, report, export and the model card read them. Readable in
optuna-dashboard.

Trial attributes::

    recipe       the trial's MergeRecipe as a mergekit dict (set when the trial is asked)
    path         instead of recipe in a data-flow run: the trial's LayerPath (to_dict)
    scores       per-judge mean scores            samples    a few {question, answer}
    timings      {merge_s, generate_s, judge_s, total_s}
    worker       worker index                     node_id    the Ray node that ran it
    attempts     evaluations tried                error / traceback   why it failed
    errors       why each earlier attempt failed (a trial retried after a worker died)
    interrupted  True on a trial the driver lost (killed, Ctrl-C): its parameters are
                 re-enqueued and it does not count as finished
    retry_of     on a re-enqueued trial: the number of the interrupted trial
    start_point  True on the enqueued start point x0
    prompt_scores  with search.pruning: each prompt's score in the run's fixed order (None
                 where unscored), as far as the trial got
    prompt_judge_scores  with search.pruning: {judge: each prompt's score by that judge},
                 in the same order (None where the judge did not apply or failed)
    prompt_ids   on a PRUNED trial: the ids of the prompts it used
    partial_values  on a PRUNED trial: the objective over the prompts it used (NaN/None
                 where a judge applied to none of them)
    pruned_value  on a PRUNED trial: the value the sampler ranks it by (a paired estimate
                 of its value over all prompts, held below the incumbent's; see
                 evomerge.search._sampler); it is also the trial's one intermediate value
                 (step = the number of prompts it used), hence optuna's value of the trial
    prune_p      with search.pruning: the last p-value of the early-stopping test

Study attributes: ``objective_names``, ``space`` (the space's name), ``sampler``,
``genome`` (the parameter names in genome order), ``n_target`` (finished trials to reach),
``path_sources`` (a data-flow run: each source as resolved when the study was created; a
resume must resolve them the same), ``prompt_order`` (with search.pruning: the prompt ids
in the fixed order the trials use; a resume must find the same).
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
    "PARTIAL_VALUES",
    "PATH",
    "PATH_SOURCES",
    "PROMPT_IDS",
    "PROMPT_JUDGE_SCORES",
    "PROMPT_ORDER",
    "PROMPT_SCORES",
    "PRUNED_VALUE",
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
PATH = "path"
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
PROMPT_SCORES = "prompt_scores"
PROMPT_IDS = "prompt_ids"
PARTIAL_VALUES = "partial_values"
PROMPT_JUDGE_SCORES = "prompt_judge_scores"
PRUNED_VALUE = "pruned_value"

OBJECTIVE_NAMES = "objective_names"
SPACE = "space"
SAMPLER = "sampler"
GENOME = "genome"
N_TARGET = "n_target"
PATH_SOURCES = "path_sources"
PROMPT_ORDER = "prompt_order"
