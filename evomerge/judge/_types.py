"""The judging vocabulary: what is judged (Sample), what comes back (Score), who judges (Judge)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol, runtime_checkable

from evomerge.generate import QuestionInfo

__all__ = ["Judge", "Sample", "Score", "nan_score", "needs_generator"]


@dataclass(frozen=True, kw_only=True)
class Sample(QuestionInfo):
    """One answer to judge, with everything a judge prompt may show next to it: the
    question's :class:`~evomerge.generate.QuestionInfo` plus ``answer``.

    ``context`` holds retrieved persona facts as text; ``facts`` the same facts (or reference
    keywords) one per item, for judges that count them (``fact_recall``).
    """

    answer: str

    @classmethod
    def of(cls, item: QuestionInfo, answer: str) -> Sample:
        """The sample of ``answer`` to ``item`` (a PromptItem or any QuestionInfo)."""
        shared = {f.name: getattr(item, f.name) for f in fields(QuestionInfo)}
        return cls(answer=answer, **shared)


@dataclass(frozen=True)
class Score:
    """A judge's verdict on one sample.

    ``value`` is NaN when no score could be obtained (unparsable reply, failed request):
    never a made-up 0. ``raw`` keeps the judge's own output (the LLM reply, or a short
    explanation for local judges) and ``error`` says what went wrong, if anything.
    NaN with no ``error`` means the judge does not apply to that sample (e.g. a question
    that asks for no fact): it is left out of the mean without counting as a failure.
    """

    value: float
    raw: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when ``value`` is a real number."""
        return not math.isnan(self.value)

    @property
    def not_applicable(self) -> bool:
        """True when the judge does not apply to the sample (NaN without an error)."""
        return math.isnan(self.value) and self.error is None


def nan_score(error: str, raw: str = "") -> Score:
    """A Score that failed: NaN with the reason."""
    return Score(value=math.nan, raw=raw, error=error)


def not_applicable(raw: str) -> Score:
    """A Score for a sample the judge does not apply to: NaN, no error, ``raw`` says why."""
    return Score(value=math.nan, raw=raw, error=None)


@runtime_checkable
class Judge(Protocol):
    """Scores answers. ``score`` returns one Score per sample, in order.

    Contract:
      - ``score(samples)`` never raises for one bad answer: that answer gets a NaN Score
        with ``error`` set. It raises :class:`~evomerge.exceptions.JudgeError` only when
        nothing can be scored (e.g. :class:`~evomerge.exceptions.JudgeAuthError` on 401/403).
      - Judges may be called from several threads; the shipped ones are thread-safe.
      - A judge that needs the candidate model (``perplexity``) sets the class attribute
        ``needs_generator = True`` and is called as ``score(samples, generator=gen)``.
      - Higher is better for every shipped judge; an objective may still minimize.
    """

    name: str

    def score(self, samples: Sequence[Sample]) -> list[Score]: ...


def needs_generator(judge: Any) -> bool:
    """Whether ``judge`` must be called with ``generator=``."""
    return bool(getattr(judge, "needs_generator", False))
