"""From judges to the number(s) the search optimizes.

``judging:`` in run.yaml::

    judging:
      judges:                      # instance name -> spec
        persona: {type: personality, weight: 1.0, endpoint: http://localhost:8000/v1, model: judge-7b}
        style:   {type: style_markers, weight: 0.5, options: {markers: {"ですわ$": 1.0}}}
        length:  {type: length, weight: 0.5, options: {min_chars: 20, max_chars: 300}}
      objectives: []               # empty: one objective "score" = sum(weight * judge mean)

or several objectives (multi-objective search, a Pareto front)::

      objectives:
        - {name: persona, direction: maximize, terms: {persona: 1.0, style: 0.5}}
        - {name: general, direction: maximize, terms: {ppl: 1.0}}
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from evomerge.exceptions import ConfigError, JudgeError
from evomerge.judge._cache import JudgeCache
from evomerge.judge._client import ChatClient
from evomerge.judge._context import JudgeContext
from evomerge.judge._registry import build_judge, is_code_judge
from evomerge.judge._types import Judge, Sample, Score, needs_generator

logger = logging.getLogger(__name__)

__all__ = [
    "CACHE_FILENAME",
    "JudgeSpec",
    "JudgingConfig",
    "Objective",
    "ObjectiveResult",
    "ObjectiveSpec",
    "build_objective",
]

CACHE_FILENAME = "judge_cache.sqlite"


class JudgeSpec(BaseModel):
    """One judge instance: a type (local judge or LLM judge YAML name), its weight and settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str
    weight: float = 1.0
    # LLM judges only:
    endpoint: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    max_concurrency: int = Field(default=8, ge=1)
    timeout: float = Field(default=60.0, gt=0.0)
    max_attempts: int = Field(default=4, ge=1)
    # Judge-specific options (local judges: their options; LLM judges: samples, temperature, ...).
    options: dict[str, Any] = {}

    @field_validator("weight")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("weight must be a finite number")
        return v


class ObjectiveSpec(BaseModel):
    """One objective: a weighted sum of judge instance means."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    direction: Literal["maximize", "minimize"] = "maximize"
    terms: dict[str, float] = Field(min_length=1)


class JudgingConfig(BaseModel):
    """The ``judging:`` section of run.yaml."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    judges: dict[str, JudgeSpec] = Field(min_length=1)
    objectives: list[ObjectiveSpec] = []
    judges_dirs: list[Path] = []
    cache: bool = True  # keep LLM replies in RUN_DIR/judge_cache.sqlite

    @model_validator(mode="after")
    def _terms_known(self) -> JudgingConfig:
        problems = []
        names = [o.name for o in self.objectives]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            problems.append(f"objective names must be unique; repeated: {', '.join(dup)}")
        for o in self.objectives:
            unknown = sorted(set(o.terms) - set(self.judges))
            if unknown:
                problems.append(
                    f"objective {o.name!r} uses unknown judge(s) {', '.join(unknown)}; defined: {', '.join(self.judges)}"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return self


@dataclass
class ObjectiveResult:
    """What one evaluation produced: objective values, per-judge means and scores, warnings."""

    values: list[float]
    judge_means: dict[str, float]
    scores: dict[str, list[Score]]
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN -> None)."""

        def num(x: float) -> float | None:
            return None if math.isnan(x) else x

        return {
            "values": [num(v) for v in self.values],
            "judge_means": {k: num(v) for k, v in self.judge_means.items()},
            "scores": {
                k: [{"value": num(s.value), "raw": s.raw, "error": s.error} for s in v]
                for k, v in self.scores.items()
            },
            "errors": list(self.errors),
        }


class Objective:
    """Runs every judge on the samples and combines their means into objective values.

    ``objectives`` empty: one objective ``score`` (maximize) = sum of ``weights[j] *
    mean_j`` over all judges (weights default to 1). ``evaluate`` raises JudgeError when
    a judge scores none of the samples (the trial fails, not the study); partial NaNs are
    averaged out and reported in ``errors``. Judges that do not need the generator run in
    parallel threads; those that do run in the caller's thread. Not re-entrant per
    instance in the sense that ``close()`` must not race ``evaluate``.
    """

    def __init__(
        self,
        *,
        judges: Mapping[str, Judge],
        objectives: Sequence[ObjectiveSpec] = (),
        weights: Mapping[str, float] | None = None,
        clients: Sequence[ChatClient] = (),
        cache: JudgeCache | None = None,
    ) -> None:
        if not judges:
            raise ConfigError("judges: at least one judge is needed")
        self.judges = dict(judges)
        if not objectives:
            w = dict(weights or {})
            unknown = sorted(set(w) - set(self.judges))
            if unknown:
                raise ConfigError(
                    f"weights: unknown judge(s) {', '.join(unknown)}; defined: {', '.join(self.judges)}"
                )
            objectives = [
                ObjectiveSpec(name="score", terms={j: w.get(j, 1.0) for j in self.judges})
            ]
        for o in objectives:
            unknown = sorted(set(o.terms) - set(self.judges))
            if unknown:
                raise ConfigError(f"objective {o.name!r}: unknown judge(s) {', '.join(unknown)}")
        self.objectives = list(objectives)
        self.names = [o.name for o in self.objectives]
        self.directions: list[str] = [o.direction for o in self.objectives]
        self._clients = list(clients)
        self.cache = cache

    def __repr__(self) -> str:
        return f"Objective(names={self.names}, judges={list(self.judges)})"

    def _run(
        self, name: str, judge: Judge, samples: Sequence[Sample], generator: Any
    ) -> list[Score]:
        if needs_generator(judge):
            scores = judge.score(samples, generator=generator)  # type: ignore[call-arg]
        else:
            scores = judge.score(samples)
        if len(scores) != len(samples):
            raise JudgeError(
                f"judge {name!r} returned {len(scores)} scores for {len(samples)} samples"
            )
        return list(scores)

    @property
    def model_judges(self) -> list[str]:
        """The judges that need the candidate model (``needs_generator``), in order."""
        return [n for n, j in self.judges.items() if needs_generator(j)]

    def score_on_model(self, samples: Sequence[Sample], generator: Any) -> dict[str, list[Score]]:
        """Run only the judges that need the candidate model (:attr:`model_judges`), in the
        caller's thread, while ``generator`` holds the candidate; pass the result to
        :meth:`evaluate` as ``model_scores`` once the model is free for the next candidate."""
        samples = list(samples)
        return {n: self._run(n, self.judges[n], samples, generator) for n in self.model_judges}

    def evaluate(
        self,
        samples: Sequence[Sample],
        *,
        generator: Any = None,
        model_scores: Mapping[str, list[Score]] | None = None,
    ) -> ObjectiveResult:
        """Score ``samples`` with every judge; see the class docstring for errors.

        ``model_scores`` (from :meth:`score_on_model`): the model judges' scores, already
        computed; then no judge uses ``generator``."""
        return self.combine(self.score(samples, generator=generator, model_scores=model_scores))

    def score(
        self,
        samples: Sequence[Sample],
        *,
        generator: Any = None,
        model_scores: Mapping[str, list[Score]] | None = None,
    ) -> dict[str, list[Score]]:
        """Every judge's scores of ``samples`` (one per sample, in order), not combined:
        :meth:`combine` turns scores gathered over several calls into the objective.
        ``model_scores``: as in :meth:`evaluate`."""
        samples = list(samples)
        if not samples:
            raise JudgeError("no samples to judge (the prompt set is empty?)")
        scores: dict[str, list[Score]] = {}
        if model_scores is not None:
            missing = sorted(set(self.model_judges) - set(model_scores))
            if missing:
                raise JudgeError(f"model_scores lacks the model judge(s) {', '.join(missing)}")
            scores.update({n: list(model_scores[n]) for n in self.model_judges})
        parallel = [n for n, j in self.judges.items() if not needs_generator(j)]
        with ThreadPoolExecutor(
            max_workers=max(1, len(parallel)), thread_name_prefix="evomerge-judge"
        ) as pool:
            futures = {
                n: pool.submit(self._run, n, self.judges[n], samples, generator) for n in parallel
            }
            for n, j in self.judges.items():
                if n not in futures and n not in scores:
                    scores[n] = self._run(n, j, samples, generator)
            for n, fut in futures.items():
                scores[n] = fut.result()
        return {n: scores[n] for n in self.judges}  # keep the configured order

    def combine(
        self, scores: Mapping[str, Sequence[Score]], *, partial: bool = False
    ) -> ObjectiveResult:
        """The objective of :meth:`score`'s scores (concatenated per judge when gathered in
        parts). A judge with no scored answer raises JudgeError; with ``partial`` (a trial
        stopped early: some judges may not apply to any of its first prompts) it is left
        out of the means instead, and the values are NaN when an objective needs it."""
        means: dict[str, float] = {}
        errors: list[str] = []
        for n, ss in scores.items():
            good = [s.value for s in ss if s.ok]
            failed = [s for s in ss if not s.ok and not s.not_applicable]
            first = next((s.error for s in failed if s.error), None) or next(
                (s.raw for s in ss if not s.ok), "no error message"
            )
            if not good:
                if partial:
                    continue
                raise JudgeError(
                    f"judge {n!r} could not score any of the {len(ss)} answers: {first}"
                )
            if failed:
                errors.append(f"{n}: {len(failed)}/{len(ss)} answers unscored (first: {first})")
                logger.warning(
                    "judge %r: %d/%d answers unscored (first: %s)", n, len(failed), len(ss), first
                )
            means[n] = sum(good) / len(good)
        values = [
            sum(w * means.get(j, math.nan) for j, w in o.terms.items()) for o in self.objectives
        ]
        return ObjectiveResult(
            values=values,
            judge_means=means,
            scores={n: list(v) for n, v in scores.items()},
            errors=errors,
        )

    def per_sample(self, scores: Mapping[str, Sequence[Score]]) -> list[float]:
        """Each sample's own share of the (first) objective, for a paired comparison of two
        candidates on the same prompts: the weighted sum of its judges' scores, a judge
        that does not apply to the sample counting 0 (the same for every candidate, so a
        difference is unaffected), NaN when a judge that applies failed to score it.

        The objective is a weighted sum of per-judge means, not the mean of these numbers
        when some judge applies to only part of the prompts; the paired test only needs
        that a better answer gets a higher number on its prompt."""
        terms = self.objectives[0].terms
        n = len(next(iter(scores.values()), []))
        out = []
        for i in range(n):
            total = 0.0
            for j, w in terms.items():
                s = scores[j][i]
                if s.ok:
                    total += w * s.value
                elif not s.not_applicable:
                    total = math.nan
                    break
            out.append(total)
        return out

    def close(self) -> None:
        """Close HTTP clients and the cache (idempotent)."""
        for c in self._clients:
            c.close()
        for j in self.judges.values():
            close = getattr(j, "close", None)
            if callable(close):
                close()
        if self.cache is not None:
            self.cache.close()
            self.cache = None

    def __enter__(self) -> Objective:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_objective(
    cfg: JudgingConfig,
    *,
    run_dir: Path | None = None,
    base_dir: Path | None = None,
    progress: bool = False,
) -> Objective:
    """Build every judge of ``cfg`` and the objective(s) over them.

    ``base_dir`` resolves relative paths (judges_dirs, judge options); ``run_dir`` holds
    the LLM reply cache (``RUN_DIR/judge_cache.sqlite``; no cache without a run_dir).
    LLM judges on the same endpoint/model/key share one client (one concurrency bound).
    Every problem is reported at once as one ConfigError.
    """
    dirs = [d if d.is_absolute() or base_dir is None else base_dir / d for d in cfg.judges_dirs]
    any_llm = any(not is_code_judge(s.type) for s in cfg.judges.values())
    cache = (
        JudgeCache(Path(run_dir) / CACHE_FILENAME)
        if (run_dir is not None and cfg.cache and any_llm)
        else None
    )
    clients: dict[tuple[Any, ...], ChatClient] = {}
    judges: dict[str, Judge] = {}
    problems: list[str] = []
    for inst, spec in cfg.judges.items():
        where = f"judging.judges.{inst}"
        code = is_code_judge(spec.type)
        if code and (spec.endpoint or spec.model or spec.api_key_env):
            problems.append(
                f"{where}: endpoint/model/api_key_env apply to LLM judges only; {spec.type!r} is a local judge"
            )
            continue
        ctx = JudgeContext(
            source=f"{where}.options", base_dir=base_dir, run_dir=run_dir, progress=progress
        )
        try:
            judges[inst] = build_judge(
                spec.type,
                name=inst,
                options=spec.options,
                judges_dirs=dirs,
                endpoint=spec.endpoint,
                model=spec.model,
                api_key_env=spec.api_key_env,
                clients=clients,
                cache=cache,
                context=ctx,
                client_options=dict(
                    max_concurrency=spec.max_concurrency,
                    timeout=spec.timeout,
                    max_attempts=spec.max_attempts,
                ),
            )
        except ConfigError as err:
            problems.append(f"{where}: {err}")
    if problems:
        for c in clients.values():
            c.close()
        if cache is not None:
            cache.close()
        raise ConfigError("invalid judging configuration:\n  " + "\n  ".join(problems))
    weights = {inst: spec.weight for inst, spec in cfg.judges.items()}
    return Objective(
        judges=judges,
        objectives=cfg.objectives,
        weights=weights,
        clients=list(clients.values()),
        cache=cache,
    )
