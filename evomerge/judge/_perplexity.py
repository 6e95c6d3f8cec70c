"""``perplexity``: how well the candidate still models held-out general text (catches forgetting).

Needs the candidate model: ``needs_generator = True``, called as
``score(samples, generator=gen)``, and uses ``generator.score_texts(texts)`` (mean token
NLL per text). The value is the **negative** mean NLL over the texts, so that higher is
better like every other judge; ``exp(-value)`` is the perplexity. It does not depend on
the answers: every sample gets the same Score.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from evomerge._yaml import read_text
from evomerge.exceptions import ConfigError, JudgeError
from evomerge.judge._context import JudgeContext, parse_options
from evomerge.judge._types import Sample, Score, nan_score

__all__ = ["PerplexityJudge", "PerplexityOptions", "load_texts"]


class PerplexityOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    texts: list[str] = []
    texts_path: Path | None = None  # .txt (paragraphs split by blank lines) or .jsonl with "text"
    max_texts: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _some_text(self) -> PerplexityOptions:
        if not self.texts and self.texts_path is None:
            raise ValueError(
                "give the held-out texts: options.texts (a list) or options.texts_path (a file)"
            )
        return self


def load_texts(path: Path) -> list[str]:
    """Paragraphs of a .txt file (blank-line separated) or the "text" fields of a .jsonl."""
    content = read_text(path, what="texts_path")
    if path.suffix == ".jsonl":
        texts = []
        for no, line in enumerate(content.splitlines(), 1):
            if line.strip():
                try:
                    texts.append(str(json.loads(line)["text"]))
                except (ValueError, KeyError, TypeError):
                    raise ConfigError(
                        f"{path}:{no}: expected a JSON object with a 'text' field"
                    ) from None
        return texts
    return [p.strip() for p in content.split("\n\n") if p.strip()]


class PerplexityJudge:
    """Negative mean NLL of held-out texts under the candidate (higher is better)."""

    needs_generator = True
    needs_answers = False

    def __init__(self, *, name: str = "perplexity", texts: Sequence[str]) -> None:
        if not texts:
            raise ConfigError(f"judge {name!r} (perplexity): no held-out texts")
        self.name = name
        self.texts = list(texts)

    @classmethod
    def from_options(
        cls, *, name: str, options: Mapping[str, Any], context: JudgeContext
    ) -> PerplexityJudge:
        o = parse_options(PerplexityOptions, options, context)
        texts = list(o.texts)
        if o.texts_path is not None:
            texts += load_texts(context.resolve(o.texts_path))
        return cls(name=name, texts=texts[: o.max_texts] if o.max_texts else texts)

    def score(self, samples: Sequence[Sample], *, generator: Any = None) -> list[Score]:
        if generator is None:
            raise JudgeError(
                f"judge {self.name!r} (perplexity) needs the candidate model: call score(samples, generator=gen)"
            )
        try:
            nll = [float(x) for x in generator.score_texts(self.texts)]
        except NotImplementedError:
            raise JudgeError(
                f"judge {self.name!r} (perplexity): the {type(generator).__name__} backend cannot score texts "
                "(score_texts is not implemented); use the hf backend or remove this judge"
            ) from None
        finite = [x for x in nll if math.isfinite(x)]
        if not finite:
            score = nan_score(f"{self.name}: every held-out text scored NaN/inf")
        else:
            m = sum(finite) / len(finite)
            score = Score(
                value=-m,
                raw=f"mean NLL {m:.4f} (perplexity {math.exp(min(m, 700.0)):.3f}) over {len(finite)} texts",
            )
        return [score] * len(samples)
