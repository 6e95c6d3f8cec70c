"""Local judges against reference material: ``bleu``, ``chrf`` (sacrebleu) and ``fact_recall``."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from evomerge.judge._context import JudgeContext, parse_options
from evomerge.judge._types import Sample, Score, nan_score, not_applicable

__all__ = ["BleuJudge", "ChrfJudge", "FactRecallJudge", "FactRecallOptions", "content_tokens"]


class _BleuOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tokenize: str | None = None  # sacrebleu tokenizer: 13a (default), intl, char, zh, ja-mecab, ...
    lowercase: bool = False


class _ChrfOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    word_order: int = Field(default=0, ge=0, le=2)  # 2 gives chrF++
    lowercase: bool = False


class _SacreJudge:
    """Sentence-level sacrebleu score (0..100) of each answer against ``Sample.reference``."""

    needs_generator = False

    def __init__(self, *, name: str, metric: Any) -> None:
        self.name = name
        self._metric = metric

    def score(self, samples: Sequence[Sample]) -> list[Score]:
        out = []
        for s in samples:
            if not s.reference:
                out.append(nan_score(f"{self.name}: the sample has no reference answer"))
                continue
            res = self._metric.sentence_score(s.answer, [s.reference])
            out.append(Score(value=float(res.score), raw=str(res)))
        return out


class BleuJudge(_SacreJudge):
    """Sentence BLEU with effective order (0..100), e.g. for translation tasks."""

    @classmethod
    def from_options(
        cls, *, name: str, options: Mapping[str, Any], context: JudgeContext
    ) -> BleuJudge:
        from sacrebleu.metrics import BLEU

        o = parse_options(_BleuOptions, options, context)
        kw: dict[str, Any] = {"effective_order": True, "lowercase": o.lowercase}
        if o.tokenize is not None:
            kw["tokenize"] = o.tokenize
        return cls(name=name, metric=BLEU(**kw))


class ChrfJudge(_SacreJudge):
    """Sentence chrF (or chrF++ with ``word_order: 2``), 0..100; suits Japanese without a tokenizer."""

    @classmethod
    def from_options(
        cls, *, name: str, options: Mapping[str, Any], context: JudgeContext
    ) -> ChrfJudge:
        from sacrebleu.metrics import CHRF

        o = parse_options(_ChrfOptions, options, context)
        return cls(name=name, metric=CHRF(word_order=o.word_order, lowercase=o.lowercase))


_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "i",
        "in",
        "is",
        "it",
        "its",
        "me",
        "my",
        "no",
        "not",
        "of",
        "on",
        "or",
        "that",
        "the",
        "this",
        "to",
        "was",
        "were",
        "with",
        "you",
        "your",
    ]
)
_CJK_RUN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")


def _norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def content_tokens(text: str) -> set[str]:
    """Latin words and numbers (minus stopwords) plus character bigrams of CJK runs."""
    t = _norm(text)
    tokens = {w for w in re.findall(r"[^\W_]+", _CJK_RUN.sub(" ", t)) if w not in _STOPWORDS}
    for run in _CJK_RUN.findall(t):
        tokens.update([run] if len(run) == 1 else (run[i : i + 2] for i in range(len(run) - 1)))
    return tokens


class FactRecallOptions(BaseModel):
    """``keywords`` are used for samples without ``facts``; ``min_overlap`` as described below."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    keywords: list[str] = []
    min_overlap: float = Field(default=0.6, gt=0.0, le=1.0)


class FactRecallJudge:
    """Fraction (0..1) of the persona facts (or reference keywords) the answer mentions.

    A fact counts as mentioned when its normalized text (NFKC, lower case, collapsed
    spaces) occurs in the answer, or when at least ``min_overlap`` of its content tokens
    (:func:`content_tokens`) occur in the answer. ``|`` separates alternative spellings of
    one fact (``Kyoto|京都``). Deterministic. NaN when there is nothing to check.
    """

    needs_generator = False

    def __init__(
        self, *, name: str = "fact_recall", options: FactRecallOptions | None = None
    ) -> None:
        self.name = name
        self.options = options or FactRecallOptions()

    @classmethod
    def from_options(
        cls, *, name: str, options: Mapping[str, Any], context: JudgeContext
    ) -> FactRecallJudge:
        return cls(name=name, options=parse_options(FactRecallOptions, options, context))

    def _mentioned(self, fact: str, answer: str, answer_tokens: set[str]) -> bool:
        for alt in (a for a in fact.split("|") if a.strip()):
            if _norm(alt) in answer:
                return True
            toks = content_tokens(alt)
            if toks and len(toks & answer_tokens) / len(toks) >= self.options.min_overlap:
                return True
        return False

    def _one(self, sample: Sample) -> Score:
        facts = [f for f in (sample.facts or tuple(self.options.keywords)) if f.strip()]
        if not facts:
            return not_applicable(
                f"{self.name}: no facts to check (give Sample.facts or options.keywords)"
            )
        answer = _norm(sample.answer)
        answer_tokens = content_tokens(sample.answer)
        missing = [f for f in facts if not self._mentioned(f, answer, answer_tokens)]
        value = 1.0 - len(missing) / len(facts)
        raw = f"{len(facts) - len(missing)}/{len(facts)} facts mentioned"
        if missing:
            raw += "; missing: " + "; ".join(missing[:5])
        return Score(value=value, raw=raw)

    def score(self, samples: Sequence[Sample]) -> list[Score]:
        return [self._one(s) for s in samples]
