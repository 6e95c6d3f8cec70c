"""Local judges on the answer text alone: ``style_markers`` and ``length``. No network."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from evomerge.judge._context import JudgeContext, parse_options
from evomerge.judge._types import Sample, Score

__all__ = [
    "LengthJudge",
    "LengthOptions",
    "StyleMarkersJudge",
    "StyleMarkersOptions",
    "split_sentences",
]

_SENTENCE_END = re.compile(r"(?<=[。．！？!?…])|\n|(?<=\.)\s+")
_TRAILING = "。．.！？!?…~～〜♪ \t　"


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``: split after 。！？!?… , at line breaks and after '. '."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip(_TRAILING)]


class Marker(BaseModel):
    """One style marker: a regex searched in each sentence (trailing punctuation removed)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pattern: str
    weight: float = Field(default=1.0, gt=0.0)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as err:
            raise ValueError(f"not a valid regular expression: {err}") from None
        return v


class StyleMarkersOptions(BaseModel):
    """``markers`` as a list of {pattern, weight} or a mapping pattern -> weight."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    markers: list[Marker] = Field(min_length=1)
    scale_min: float = 0.0
    scale_max: float = 1.0

    @field_validator("markers", mode="before")
    @classmethod
    def _from_mapping(cls, v: Any) -> Any:
        if isinstance(v, Mapping):
            return [{"pattern": k, "weight": w} for k, w in v.items()]
        return v

    @field_validator("scale_max")
    @classmethod
    def _range(cls, v: float, info: ValidationInfo) -> float:
        lo = info.data.get("scale_min")
        if lo is not None and lo >= v:
            raise ValueError(f"must be above scale_min ({lo})")
        return v


class StyleMarkersJudge:
    """Weighted fraction of sentences that show the persona's speech style, scaled to a range.

    Each sentence counts the largest weight among the markers found in it, divided by the
    largest weight overall (so a sentence with the strongest marker counts 1). Markers are
    searched (``re.search``) in the sentence with its trailing punctuation removed, so
    ``ですわ$`` matches ``…ですわ。``. An answer without sentences gets ``scale_min``.
    """

    needs_generator = False

    def __init__(self, *, name: str = "style_markers", options: StyleMarkersOptions) -> None:
        self.name = name
        self.options = options
        self._markers = [(re.compile(m.pattern), m.weight) for m in options.markers]
        self._top = max(w for _, w in self._markers)

    @classmethod
    def from_options(
        cls, *, name: str, options: Mapping[str, Any], context: JudgeContext
    ) -> StyleMarkersJudge:
        return cls(name=name, options=parse_options(StyleMarkersOptions, options, context))

    def _one(self, text: str) -> Score:
        sentences = split_sentences(text)
        lo, hi = self.options.scale_min, self.options.scale_max
        if not sentences:
            return Score(value=lo, raw="0 sentences")
        total, hits = 0.0, 0
        for s in sentences:
            core = s.rstrip(_TRAILING)
            w = max((w for rx, w in self._markers if rx.search(core)), default=0.0)
            total += w / self._top
            hits += w > 0
        frac = total / len(sentences)
        return Score(
            value=lo + frac * (hi - lo),
            raw=f"{hits}/{len(sentences)} sentences carry a style marker",
        )

    def score(self, samples: Sequence[Sample]) -> list[Score]:
        return [self._one(s.answer) for s in samples]


class LengthOptions(BaseModel):
    """Target length range in characters (of the stripped answer)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_chars: int = Field(default=1, ge=0)
    max_chars: int = Field(default=400, ge=1)

    @field_validator("max_chars")
    @classmethod
    def _range(cls, v: int, info: ValidationInfo) -> int:
        lo = info.data.get("min_chars")
        if lo is not None and lo > v:
            raise ValueError(f"must not be below min_chars ({lo})")
        return v


class LengthJudge:
    """1.0 inside ``min_chars..max_chars``; below, ``n / min_chars``; above, ``max_chars / n``.

    Scale-free: an answer twice too long scores 0.5, three times 0.33; an empty answer 0.
    """

    needs_generator = False

    def __init__(self, *, name: str = "length", options: LengthOptions | None = None) -> None:
        self.name = name
        self.options = options or LengthOptions()

    @classmethod
    def from_options(
        cls, *, name: str, options: Mapping[str, Any], context: JudgeContext
    ) -> LengthJudge:
        return cls(name=name, options=parse_options(LengthOptions, options, context))

    def _one(self, text: str) -> Score:
        n = len(text.strip())
        lo, hi = self.options.min_chars, self.options.max_chars
        if n < lo:
            value = n / lo
        elif n > hi:
            value = hi / n
        else:
            value = 1.0
        return Score(value=value, raw=f"{n} chars (target {lo}..{hi})")

    def score(self, samples: Sequence[Sample]) -> list[Score]:
        return [self._one(s.answer) for s in samples]
