"""Harness tasks built once per worker and evaluated on every trial's live model.

Building a task (indexing its folder, loading its data, resolving its prompt functions) is
the expensive, trial-independent part: :class:`HarnessTasks` does it once. Each trial then
calls the harness's ``evaluate`` on the same task objects, with the few-shot sampler
re-seeded first, so that every trial sees the same few-shot examples (the harness's
``simple_evaluate`` seeds a fresh sampler per call; re-seeding gives the same prompts).
The prompts being the same, the requests built from them are kept too (:class:`_Requests`,
what the harness's ``cache_requests`` does on disk, here in memory): a trial only resets
their responses.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from evomerge.exceptions import ConfigError, JudgeError
from evomerge.judge.harness._data import bundled_tasks_dir
from evomerge.judge.harness._local import DEFINE_LOCALLY, harness_builtin, problems

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_FEWSHOT_SEED", "HarnessTasks", "metric_value"]

#: The harness's own default seed for few-shot sampling (``simple_evaluate``'s).
DEFAULT_FEWSHOT_SEED = 1234


def _unknown(names: Sequence[str], available: Iterable[str], folders: Sequence[Path]) -> str:
    shown = ", ".join(sorted(available)) or "(none)"
    where = ", ".join(str(f) for f in folders)
    lines = [
        f"Unknown lm-eval task(s) {', '.join(map(repr, names))}. Available: {shown} (from {where})"
    ]
    builtin = [n for n in names if harness_builtin(n)]
    if builtin:
        lines.append(
            f"{', '.join(map(repr, builtin))}: lm-eval's own task(s), whose data comes from the "
            f"Hugging Face Hub; evomerge never downloads data: {DEFINE_LOCALLY}"
        )
    else:
        lines.append("add a folder with your task YAMLs to the judge's tasks_dirs")
    return "; ".join(lines)


class HarnessTasks:
    """The named tasks (or groups) from the bundled folder plus ``tasks_dirs``, built once.

    ``num_fewshot`` and ``gen_kwargs`` are applied as the harness's ``simple_evaluate``
    applies them (a task whose YAML says ``num_fewshot: 0`` keeps 0). Raises ConfigError
    for unknown names (listing the available ones), tasks that would download data or
    metrics, and tasks the harness cannot build. Not thread-safe: one trial at a time.
    """

    def __init__(
        self,
        names: Sequence[str],
        *,
        tasks_dirs: Sequence[str | Path] = (),
        num_fewshot: int | None = None,
        gen_kwargs: Mapping[str, Any] | None = None,
        fewshot_seed: int | None = DEFAULT_FEWSHOT_SEED,
        source: str = "lm_eval options",
    ) -> None:
        from lm_eval.tasks import TaskManager

        folders = [bundled_tasks_dir(), *(Path(d) for d in tasks_dirs)]
        for f in folders[1:]:
            if not f.is_dir():
                raise ConfigError(f"{source}: tasks_dirs entry {str(f)!r} is not a folder")
        manager = TaskManager(include_path=[str(f) for f in folders], include_defaults=False)
        index = manager.task_index
        unknown = [n for n in names if n not in index]
        if unknown:
            raise ConfigError(f"{source}: {_unknown(unknown, manager.all_tasks, folders)}")
        found = problems(names, index)
        if found:
            raise ConfigError(f"{source}: " + "; ".join(found))
        try:
            loaded = manager.load(list(names))
        except ConfigError:
            raise
        except Exception as err:  # the harness raises many kinds; name the tasks
            raise ConfigError(
                f"{source}: lm-eval could not build {list(names)}: {type(err).__name__}: {err}"
            ) from err
        self.names = list(names)
        self.fewshot_seed = fewshot_seed
        self.loaded = loaded
        self.tasks: dict[str, Any] = dict(loaded["tasks"])
        for task in self.tasks.values():
            self._configure(task, num_fewshot, gen_kwargs)
            if fewshot_seed is not None:  # without a seed, every trial draws new few-shot examples
                task.build_all_requests = _Requests(task, task.build_all_requests)

    @staticmethod
    def _configure(
        task: Any, num_fewshot: int | None, gen_kwargs: Mapping[str, Any] | None
    ) -> None:
        if gen_kwargs and task.get_config("output_type") == "generate_until":
            task.set_config(key="generation_kwargs", value=dict(gen_kwargs), update=True)
        if num_fewshot is not None:
            if task.get_config("num_fewshot") != 0:
                task.set_config(key="num_fewshot", value=num_fewshot)
        elif task.get_config("num_fewshot") is None:
            task.set_config(key="num_fewshot", value=0)

    def metric_names(self, task_name: str) -> list[str]:
        """``metric,filter`` keys a leaf task reports, e.g. ``acc,none`` (groups: empty)."""
        task = self.tasks.get(task_name)
        if task is None:
            return []
        filters = [f["name"] for f in task.get_config("filter_list") or []] or ["none"]
        return [f"{m},{f}" for f in filters for m in task.aggregation()]

    def evaluate(
        self,
        lm: Any,
        *,
        limit: int | float | None = None,
        apply_chat_template: bool | str = False,
        fewshot_as_multiturn: bool = True,
        system_instruction: str | None = None,
    ) -> dict[str, dict[str, float]]:
        """Run every task on ``lm``: ``{task or group: {"metric,filter": value}}`` (no stderr)."""
        from lm_eval.evaluator import evaluate

        for task in self.tasks.values():
            task.set_fewshot_seed(seed=self.fewshot_seed)
        out = evaluate(
            lm=lm,
            task_dict=self.loaded,
            limit=limit,
            bootstrap_iters=0,
            log_samples=False,
            system_instruction=system_instruction,
            apply_chat_template=apply_chat_template,
            fewshot_as_multiturn=fewshot_as_multiturn and bool(apply_chat_template),
        )
        if out is None:
            raise JudgeError("lm-eval returned no results (not rank 0?)")
        return _numeric(out["results"])


class _Requests:
    """A task's ``build_all_requests`` that builds once while its arguments stay the same.

    A later call with the same arguments leaves the task holding the request objects it
    already has (``task.instances``), their responses cleared (the harness appends to
    ``resps`` and fills ``filtered_resps`` per evaluation); other arguments build anew. Only
    for tasks whose few-shot sampler is re-seeded before every call, so that building again
    would give the same requests.
    """

    def __init__(self, task: Any, build: Any) -> None:
        self.task = task
        self.build = build
        self.key: tuple[Any, ...] | None = None
        self.instances: list[Any] | None = None

    def __call__(self, **kwargs: Any) -> None:
        template = kwargs.get("chat_template")  # the LM's bound method: its LM and function
        key = (
            *(repr(kwargs.get(k)) for k in sorted(kwargs) if k != "chat_template"),
            getattr(template, "__self__", None),
            getattr(template, "__func__", template),
        )
        if key == self.key and self.task.instances is self.instances:
            for inst in self.instances or []:
                inst.resps = []
                inst.filtered_resps = {}
            return
        self.build(**kwargs)
        self.key, self.instances = key, self.task.instances


def _numeric(results: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {}
    for name, row in results.items():
        table[name] = {
            k: float(v)
            for k, v in row.items()
            if "," in k
            and "_stderr," not in k
            and isinstance(v, (int, float))
            and not isinstance(v, bool)
        }
    return table


def metric_value(table: Mapping[str, Mapping[str, float]], task: str, metric: str) -> float:
    """``metric`` (``acc`` or ``acc,none``) of ``task`` in an :meth:`HarnessTasks.evaluate` table.

    Raises JudgeError when absent or ambiguous (several filters), listing what there is.
    """
    row = table.get(task)
    if row is None:
        raise JudgeError(f"lm-eval reported no results for {task!r}; got {sorted(table)}")
    if metric in row:
        return row[metric]
    matches = [k for k in row if k.split(",", 1)[0] == metric]
    if len(matches) != 1:
        what = "is ambiguous" if matches else "is not reported"
        raise JudgeError(
            f"metric {metric!r} {what} for {task!r}; reported: {', '.join(sorted(row)) or '(none)'}"
        )
    value = row[matches[0]]
    return value if math.isfinite(value) else math.nan
