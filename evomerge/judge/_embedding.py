"""``embedding_similarity``: cosine similarity of each answer to its reference answer.

The embedder is a local sentence-transformers model (``options.model_path``, loaded on
first use with :class:`evomerge.generate.SentenceTransformerEmbedder`) or any
:class:`evomerge.generate.Embedder`, or a callable ``texts -> array [len(texts), dim]``,
passed to the constructor (tests, or a model already in memory).
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from evomerge.exceptions import ConfigError
from evomerge.generate import Embedder, SentenceTransformerEmbedder
from evomerge.judge._context import JudgeContext, parse_options
from evomerge.judge._types import Sample, Score, nan_score

logger = logging.getLogger(__name__)

__all__ = ["EmbeddingSimilarityJudge", "EmbeddingSimilarityOptions"]

EmbedFn = Callable[[list[str]], Any]  # texts -> array-like [len(texts), dim]


class EmbeddingSimilarityOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model_path: str | None = None  # a local sentence-transformers folder
    device: str = "cpu"
    batch_size: int = Field(default=32, ge=1)


class EmbeddingSimilarityJudge:
    """Cosine similarity (-1..1) between answer and ``Sample.reference``; NaN without reference."""

    needs_generator = False

    def __init__(
        self,
        *,
        name: str = "embedding_similarity",
        options: EmbeddingSimilarityOptions | None = None,
        embedder: Embedder | EmbedFn | None = None,
    ) -> None:
        self.name = name
        self.options = options or EmbeddingSimilarityOptions()
        self._field = f"judge {name!r} (embedding_similarity): options.model_path"
        if embedder is None:
            if self.options.model_path is None:
                raise ConfigError(
                    f"{self._field} is required (a local sentence-transformers model folder)"
                )
            if importlib.util.find_spec("sentence_transformers") is None:
                raise ConfigError(
                    f"{self._field} needs sentence-transformers: pip install 'evomerge[embed]'"
                )
        self._embedder = embedder
        self._lock = threading.Lock()

    @classmethod
    def from_options(
        cls, *, name: str, options: Mapping[str, Any], context: JudgeContext
    ) -> EmbeddingSimilarityJudge:
        opts = parse_options(EmbeddingSimilarityOptions, options, context)
        if opts.model_path is not None:
            opts = opts.model_copy(update={"model_path": str(context.resolve(opts.model_path))})
        return cls(name=name, options=opts)

    def _embed(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            if self._embedder is None:
                self._embedder = SentenceTransformerEmbedder(
                    model_path=str(self.options.model_path),  # set: checked in __init__
                    device=self.options.device,
                    batch_size=self.options.batch_size,
                    field=self._field,
                )
            embedder = self._embedder
        if isinstance(embedder, Embedder):
            return np.asarray(embedder.encode(texts), dtype=np.float64)
        return np.asarray(embedder(texts), dtype=np.float64)

    def score(self, samples: Sequence[Sample]) -> list[Score]:
        idx = [i for i, s in enumerate(samples) if s.reference]
        out: list[Score] = [nan_score(f"{self.name}: the sample has no reference answer")] * len(
            samples
        )
        if not idx:
            return out
        texts = [samples[i].answer for i in idx] + [samples[i].reference or "" for i in idx]
        emb = self._embed(texts)  # [2k, dim]: answers then references
        k = len(idx)
        a, r = emb[:k], emb[k:]
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(r, axis=1)
        cos = np.einsum("kd,kd->k", a, r) / np.where(norms > 0, norms, np.nan)
        for j, i in enumerate(idx):
            v = float(cos[j])
            out[i] = (
                Score(value=v, raw=f"cosine {v:.4f}")
                if np.isfinite(v)
                else nan_score("zero-length embedding")
            )
        return out
