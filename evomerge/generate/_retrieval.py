"""Retrieval of persona facts for a question by embedding cosine similarity.

The embedding model is injectable (:class:`Embedder`), so the selection logic is tested
with a deterministic fake; :class:`SentenceTransformerEmbedder` is the real one (optional
``embed`` extra, imported lazily).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from evomerge.exceptions import ConfigError, GenerationError

if TYPE_CHECKING:
    from evomerge.generate._config import RetrievalConfig

logger = logging.getLogger(__name__)

__all__ = [
    "Embedder",
    "FactRetriever",
    "SentenceTransformerEmbedder",
    "build_embedder",
    "cosine_similarity",
    "select_facts",
]


@runtime_checkable
class Embedder(Protocol):
    """Maps texts to vectors: ``encode(texts)`` returns an array of shape [len(texts), dim]."""

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of ``a`` [n, d] with every row of ``b`` [m, d] -> [n, m].

    A zero vector has similarity 0 with everything.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na = np.linalg.norm(a, axis=1, keepdims=True)  # [n, 1]
    nb = np.linalg.norm(b, axis=1, keepdims=True)  # [m, 1]
    a = np.divide(a, na, out=np.zeros_like(a), where=na > 0)
    b = np.divide(b, nb, out=np.zeros_like(b), where=nb > 0)
    return a @ b.T  # [n, m]


def select_facts(
    similarities: np.ndarray, facts: Sequence[str], *, threshold: float, top_k: int | None = None
) -> tuple[str, ...]:
    """The facts whose similarity [m] is >= ``threshold``, most similar first (ties keep file
    order), at most ``top_k`` of them."""
    sims = np.asarray(similarities, dtype=np.float64)
    order = sorted(
        (i for i in range(len(facts)) if sims[i] >= threshold), key=lambda i: (-sims[i], i)
    )
    if top_k is not None:
        order = order[:top_k]
    return tuple(facts[i] for i in order)


def _embed(embedder: Embedder, texts: Sequence[str], what: str) -> np.ndarray:
    vecs = np.asarray(embedder.encode(list(texts)))
    if vecs.ndim != 2 or vecs.shape[0] != len(texts):
        raise GenerationError(
            f"embedder returned shape {vecs.shape} for {len(texts)} {what}; expected [{len(texts)}, dim]"
        )
    return vecs


class FactRetriever:
    """Embeds the facts once, then picks the relevant ones for each question.

    Thread-safe after construction if the embedder is.
    """

    def __init__(
        self,
        *,
        facts: Sequence[str],
        embedder: Embedder,
        threshold: float = 0.75,
        top_k: int | None = None,
    ) -> None:
        self.facts = tuple(facts)
        self.threshold = threshold
        self.top_k = top_k
        self._embedder = embedder
        self._fact_vecs = _embed(embedder, self.facts, "facts") if self.facts else None

    def retrieve(self, questions: Sequence[str]) -> list[tuple[str, ...]]:
        """For each question, the selected facts (see :func:`select_facts`)."""
        if not questions:
            return []
        if self._fact_vecs is None:
            return [() for _ in questions]
        q = _embed(self._embedder, questions, "questions")
        if q.shape[1] != self._fact_vecs.shape[1]:
            raise GenerationError(
                f"embedder dimensions differ: questions {q.shape[1]}, facts {self._fact_vecs.shape[1]}"
            )
        sims = cosine_similarity(q, self._fact_vecs)  # [questions, facts]
        return [
            select_facts(row, self.facts, threshold=self.threshold, top_k=self.top_k)
            for row in sims
        ]


class SentenceTransformerEmbedder:
    """A local sentence-transformers model (``pip install 'evomerge[embed]'``); the one
    wrapper, used by retrieval and by the ``embedding_similarity`` judge.

    ``field`` names the setting in errors (``generation.retrieval.model``,
    ``judging.judges.<name>.options.model_path``). Raises ConfigError when the package is
    missing or ``model_path`` does not exist.
    """

    def __init__(
        self,
        *,
        model_path: str | Path,
        device: str = "cpu",
        batch_size: int = 32,
        field: str = "generation.retrieval.model",
    ) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as err:
            raise ConfigError(
                f"{field} needs sentence-transformers: pip install 'evomerge[embed]'"
            ) from err
        if not Path(model_path).exists():
            raise ConfigError(f"{field}: {model_path} does not exist (a local model directory)")
        logger.info("loading sentence-transformers model %s", model_path)
        self._model: Any = SentenceTransformer(str(model_path), device=device)
        self._batch_size = batch_size

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vecs = self._model.encode(
            list(texts), batch_size=self._batch_size, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vecs)


def build_embedder(cfg: RetrievalConfig) -> Embedder:
    """The embedder configured by ``generation.retrieval``."""
    return SentenceTransformerEmbedder(model_path=cfg.model, device=cfg.device)
