"""``lm_eval``: lm-evaluation-harness tasks as a judge, run on the live candidate model.

In run.yaml::

    judging:
      judges:
        facts: {type: lm_eval, options: {tasks: [persona_facts_mc], metric: acc}}
        register: {type: lm_eval, options: {tasks: [persona_register], metric: chrf, limit: 16}}

The worker's ``hf`` generator holds the merged weights in memory; the judge wraps that very
model (and its tokenizer) in the harness's HF wrapper once and runs the tasks on it every
trial: nothing is written to disk. Tasks are built once (see :class:`HarnessTasks`); they
come from evomerge's bundled folder and ``tasks_dirs``, and must not download anything.

The score is the mean over the judge's tasks of each task's ``metric`` (one value per
trial, given to every sample, as ``perplexity`` does); ``raw`` holds every metric of every
task as JSON, so the report shows them all. Several metrics as separate objectives: one
judge instance per metric.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator

from evomerge.exceptions import ConfigError, JudgeError
from evomerge.judge._context import JudgeContext, parse_options
from evomerge.judge._types import Sample, Score, nan_score
from evomerge.judge.harness._hflm import live_hflm
from evomerge.judge.harness._tasks import DEFAULT_FEWSHOT_SEED, HarnessTasks, metric_value

logger = logging.getLogger(__name__)

__all__ = ["LMEvalJudge", "LMEvalOptions", "LiveHFModel"]


class LMEvalOptions(BaseModel):
    """The ``options:`` of an ``lm_eval`` judge.

    ``metric``: one name for every task (``acc``, ``chrf``, or ``metric,filter``), a mapping
    task -> name, or None for each task's first metric. ``limit``: at most this many
    documents per task (a fraction in (0, 1) for a share), as the harness's ``--limit``.
    ``num_fewshot``, ``apply_chat_template``, ``fewshot_as_multiturn``,
    ``system_instruction``, ``gen_kwargs`` and ``fewshot_seed`` mean what they mean to
    ``lm_eval.simple_evaluate``. ``batch_size``/``max_length``/``add_bos_token`` go to the
    harness's HF wrapper. ``share_context``: score all continuations of one context from one
    packed row (``_packed``; the same log-likelihoods up to rounding, checked against the
    harness's path on the first context) instead of one row per request; ``batch_size`` is
    then contexts per forward pass. ``tasks_dirs``: folders of your own task YAMLs (relative to the
    run.yaml), searched after the bundled ones.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    tasks: list[str] = Field(min_length=1)
    metric: str | dict[str, str] | None = None
    limit: int | float | None = None
    num_fewshot: int | None = Field(default=None, ge=0)
    apply_chat_template: bool | str = False
    fewshot_as_multiturn: bool = True
    system_instruction: str | None = None
    gen_kwargs: dict[str, Any] | None = None
    fewshot_seed: int | None = DEFAULT_FEWSHOT_SEED
    batch_size: int = Field(default=8, ge=1)
    max_length: int | None = Field(default=None, ge=1)
    add_bos_token: bool | None = None
    share_context: bool = True
    tasks_dirs: list[Path] = []

    @field_validator("limit")
    @classmethod
    def _limit(cls, v: int | float | None) -> int | float | None:
        if v is None:
            return v
        if isinstance(v, float) and not v.is_integer():
            if not 0.0 < v < 1.0:
                raise ValueError(f"a fractional limit must be in (0, 1), got {v}")
            return v
        if v < 1:
            raise ValueError(
                f"limit must be a positive number of documents or a fraction in (0, 1), got {v}"
            )
        return int(v)

    @field_validator("tasks")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"tasks must be distinct, got {v}")
        return v


@runtime_checkable
class LiveHFModel(Protocol):
    """A generator holding a live transformers model and its tokenizer (the ``hf`` backend)."""

    @property
    def model(self) -> Any: ...

    @property
    def tokenizer(self) -> Any: ...


class LMEvalJudge:
    """Scores the live candidate on lm-eval tasks; see the module docstring."""

    needs_generator: ClassVar[bool] = True
    needs_answers: ClassVar[bool] = False

    def __init__(self, *, name: str, options: LMEvalOptions, tasks: HarnessTasks) -> None:
        self.name = name
        self.options = options
        self.tasks = tasks
        self.metrics = self._resolve_metrics(options.metric)
        self._lm: Any = None
        self._lm_model: Any = None

    @classmethod
    def from_options(
        cls, *, name: str, options: Mapping[str, Any], context: JudgeContext
    ) -> LMEvalJudge:
        o = parse_options(LMEvalOptions, options, context)
        try:
            import lm_eval  # noqa: F401
        except ImportError:
            raise ConfigError(
                f"{context.source}: judge {name!r} needs lm-evaluation-harness: pip install 'evomerge[lmeval]'"
            ) from None
        tasks = HarnessTasks(
            o.tasks,
            tasks_dirs=[context.resolve(d) for d in o.tasks_dirs],
            num_fewshot=o.num_fewshot,
            gen_kwargs=o.gen_kwargs,
            fewshot_seed=o.fewshot_seed,
            source=context.source,
        )
        return cls(name=name, options=o, tasks=tasks)

    def _resolve_metrics(self, metric: str | dict[str, str] | None) -> dict[str, str]:
        names = self.options.tasks
        if isinstance(metric, dict):
            unknown = sorted(set(metric) - set(names))
            missing = [t for t in names if t not in metric]
            if unknown or missing:
                raise ConfigError(
                    f"judge {self.name!r}: metric mapping must name each task once; "
                    f"tasks: {names}, unknown: {unknown}, missing: {missing}"
                )
            chosen: dict[str, str | None] = dict(metric)
        else:
            chosen = dict.fromkeys(names, metric)
        out: dict[str, str] = {}
        for task, m in chosen.items():
            available = self.tasks.metric_names(task)
            if m is None:
                if not available:
                    raise ConfigError(f"judge {self.name!r}: {task!r} is a group; name its metric")
                m = available[0]
            elif (
                available
                and m not in available
                and not any(a.split(",")[0] == m for a in available)
            ):
                raise ConfigError(
                    f"judge {self.name!r}: task {task!r} has no metric {m!r}. Available: {', '.join(available)}"
                )
            out[task] = m
        return out

    def _lm_for(self, generator: Any) -> Any:
        if generator is None:
            raise JudgeError(
                f"judge {self.name!r} (lm_eval) needs the candidate model: call score(samples, generator=gen)"
            )
        if not isinstance(generator, LiveHFModel):
            raise JudgeError(
                f"judge {self.name!r} (lm_eval) runs the harness on a live transformers model; the "
                f"{type(generator).__name__} backend has none (the harness's vLLM wrapper builds its own "
                "engine from a path, so it cannot score weights reloaded in place): use generation.backend: hf"
            )
        if self._lm is None or self._lm_model is not generator.model:
            o = self.options
            kw: dict[str, Any] = dict(
                pretrained=generator.model, tokenizer=generator.tokenizer, batch_size=o.batch_size
            )
            if o.max_length is not None:
                kw["max_length"] = o.max_length
            if o.add_bos_token is not None:
                kw["add_bos_token"] = o.add_bos_token
            self._lm = live_hflm(share_context=o.share_context, **kw)
            self._lm_model = generator.model
        return self._lm

    def evaluate(self, generator: Any) -> dict[str, dict[str, float]]:
        """Every metric of every task on the generator's current weights."""
        o = self.options
        return self.tasks.evaluate(
            self._lm_for(generator),
            limit=o.limit,
            apply_chat_template=o.apply_chat_template,
            fewshot_as_multiturn=o.fewshot_as_multiturn,
            system_instruction=o.system_instruction,
        )

    def score(self, samples: Sequence[Sample], *, generator: Any = None) -> list[Score]:
        table = self.evaluate(generator)
        values = [metric_value(table, t, m) for t, m in self.metrics.items()]
        raw = json.dumps({"metrics": self.metrics, "results": table}, sort_keys=True)
        if not all(math.isfinite(v) for v in values):
            score = nan_score(f"{self.name}: a task metric is not a finite number", raw=raw)
        else:
            score = Score(value=sum(values) / len(values), raw=raw)
        return [score] * len(samples)
