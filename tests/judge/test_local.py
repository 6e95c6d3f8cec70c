"""Local judges on hand-made examples (no network)."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from evomerge.exceptions import ConfigError, JudgeError
from evomerge.judge import (
    ENTRY_POINT_GROUP,
    EmbeddingSimilarityJudge,
    JudgeContext,
    LengthJudge,
    PerplexityJudge,
    Sample,
    build_judge,
    register_judge,
)
from evomerge.judge._local import split_sentences
from evomerge.judge._reference import content_tokens


def S(answer: str, **kw: Any) -> Sample:
    return Sample(question="q", answer=answer, **kw)


def test_split_sentences():
    assert split_sentences("ごきげんよう。紅茶ですわ！本当？\nHello there. Bye!") == [
        "ごきげんよう。",
        "紅茶ですわ！",
        "本当？",
        "Hello there.",
        "Bye!",
    ]
    assert split_sentences("。。\n  ") == []


def test_style_markers_weighted_fraction_scaled():
    judge = build_judge(
        "style_markers",
        options={"markers": {"ですわ$": 1.0, "ですの$": 0.5}, "scale_min": 1, "scale_max": 7},
    )
    scores = judge.score(
        [
            S("ごきげんよう。紅茶が好きですわ。今日は雨だね。"),  # 1 of 3 sentences, full weight
            S("紅茶ですの。フェンシングですわ！"),  # (0.5 + 1) / 2
            S("普通の文です。"),  # none
            S(""),  # no sentences: the minimum
        ]
    )
    assert [s.value for s in scores] == pytest.approx([1 + 6 / 3, 1 + 6 * 0.75, 1.0, 1.0])
    assert scores[0].raw == "1/3 sentences carry a style marker"


def test_style_markers_options_are_validated():
    with pytest.raises(ConfigError) as info:
        build_judge(
            "style_markers",
            options={"markers": [{"pattern": "(", "weight": 1}], "scale_min": 2, "scale_max": 1},
        )
    msg = str(info.value)
    assert (
        "markers.0.pattern" in msg
        and "not a valid regular expression" in msg
        and "scale_max: Value error, must be above scale_min" in msg
    )
    with pytest.raises(ConfigError, match="markers"):
        build_judge("style_markers")


def test_length_penalty_outside_the_target_range():
    judge = build_judge("length", options={"min_chars": 10, "max_chars": 20})
    scores = judge.score([S("a" * 15), S("a" * 40), S("a" * 5), S("   "), S("a" * 10), S("a" * 20)])
    assert [s.value for s in scores] == pytest.approx([1.0, 0.5, 0.5, 0.0, 1.0, 1.0])
    assert scores[1].raw == "40 chars (target 10..20)"
    with pytest.raises(ConfigError, match="max_chars: Value error, must not be below min_chars"):
        LengthJudge.from_options(
            name="l", options={"min_chars": 30, "max_chars": 20}, context=JudgeContext()
        )


def test_fact_recall_counts_mentioned_facts():
    judge = build_judge("fact_recall")
    facts = ("Kyoto|京都", "Earl Grey tea", "born in 1990")
    [a, b, c] = judge.score(
        [
            S(
                "I grew up in 京都, and I was born 1990.", facts=facts
            ),  # alt spelling; token overlap {born, 1990}
            S("Earl grey TEA from kyoto, born in 1990!", facts=facts),  # case-insensitive phrases
            S("I like coffee.", facts=facts),
        ]
    )
    assert a.value == pytest.approx(2 / 3) and "missing: Earl Grey tea" in a.raw
    assert b.value == 1.0 and c.value == 0.0


def test_fact_recall_keywords_and_nan_without_facts():
    judge = build_judge("fact_recall", options={"keywords": ["紅茶", "フェンシング"]})
    [s] = judge.score([S("紅茶が好きですわ。")])
    assert s.value == 0.5
    [n] = build_judge("fact_recall").score([S("anything")])
    assert math.isnan(n.value) and n.not_applicable and "no facts" in n.raw


def test_content_tokens_cover_latin_and_cjk():
    assert content_tokens("The Earl-Grey tea") == {"earl", "grey", "tea"}
    assert content_tokens("京都の紅茶") == {"京都", "都の", "の紅", "紅茶"}


def test_bleu_and_chrf_against_reference():
    ref = "the cat sat on the mat"
    for name in ("bleu", "chrf"):
        judge = build_judge(name)
        exact, close, far, none = judge.score(
            [
                S(ref, reference=ref),
                S("the cat sat on a mat", reference=ref),
                S("dogs bark loudly", reference=ref),
                S(ref),
            ]
        )
        assert exact.value == pytest.approx(100.0), name
        assert 0.0 <= far.value < close.value < 100.0, name
        assert math.isnan(none.value) and "no reference" in (none.error or ""), name


def test_chrf_works_on_japanese():
    [s] = build_judge("chrf").score(
        [S("猫がマットの上に座った", reference="猫がマットの上に座っている")]
    )
    assert 30.0 < s.value < 100.0


def _bag_of_chars(texts: list[str]) -> np.ndarray:
    vocab = "abcdefghijklmnopqrstuvwxyz"
    return np.array([[t.count(ch) for ch in vocab] for t in texts], dtype=float)  # [n, 26]


def test_embedding_similarity_with_an_injected_embedder():
    judge = EmbeddingSimilarityJudge(embedder=_bag_of_chars)
    same, ortho, partial, noref = judge.score(
        [
            S("abc", reference="cab"),
            S("aaa", reference="bbb"),
            S("ab", reference="a"),
            S("abc"),
        ]
    )
    assert same.value == pytest.approx(1.0) and ortho.value == pytest.approx(0.0)
    assert partial.value == pytest.approx(1 / math.sqrt(2))
    assert math.isnan(noref.value)


def test_embedding_similarity_needs_a_model(tmp_path: Path):
    with pytest.raises(ConfigError, match="model_path"):
        build_judge("embedding_similarity")


@pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is not None,
    reason="sentence-transformers is installed",
)
def test_embedding_similarity_without_the_library_says_how_to_install(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"evomerge\[embed\]"):
        build_judge("embedding_similarity", options={"model_path": str(tmp_path)})


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None, reason="needs sentence-transformers"
)
def test_embedding_similarity_loads_a_local_sentence_transformers_model(tmp_path: Path):
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizer

    torch.manual_seed(0)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab), encoding="utf-8")
    hf_dir = tmp_path / "hf"
    BertTokenizer(str(tmp_path / "vocab.txt")).save_pretrained(hf_dir)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    BertModel(cfg).save_pretrained(hf_dir)
    word = Transformer(str(hf_dir))
    st = SentenceTransformer(modules=[word, Pooling(word.get_word_embedding_dimension())])
    st.save(str(tmp_path / "st"))

    judge = build_judge(
        "embedding_similarity",
        options={"model_path": "st"},
        context=JudgeContext(base_dir=tmp_path),
    )
    same, other = judge.score([S("abc", reference="abc"), S("zzz qq", reference="abc")])
    emb = SentenceTransformer(str(tmp_path / "st")).encode(["zzz qq", "abc"], convert_to_numpy=True)
    expected = float(emb[0] @ emb[1] / (np.linalg.norm(emb[0]) * np.linalg.norm(emb[1])))
    assert same.value == pytest.approx(1.0, abs=1e-5)
    assert other.value == pytest.approx(expected, abs=1e-5) and other.value < 1.0 - 1e-6


class _Gen:
    def __init__(self, nll: Sequence[float] | None) -> None:
        self.nll = nll
        self.seen: list[list[str]] = []

    def score_texts(self, texts: Sequence[str]) -> list[float]:
        self.seen.append(list(texts))
        if self.nll is None:
            raise NotImplementedError
        return list(self.nll)


def test_perplexity_is_negative_mean_nll(tmp_path: Path):
    (tmp_path / "held.txt").write_text("first paragraph\n\nsecond one\n", encoding="utf-8")
    ctx = JudgeContext(base_dir=tmp_path)
    judge = build_judge(
        "perplexity", options={"texts": ["extra"], "texts_path": "held.txt"}, context=ctx
    )
    assert judge.needs_generator is True  # type: ignore[attr-defined]
    gen = _Gen([2.0, 4.0, float("nan")])
    scores = judge.score([S("a"), S("b")], generator=gen)  # type: ignore[call-arg]
    assert gen.seen == [["extra", "first paragraph", "second one"]]
    assert [s.value for s in scores] == [-3.0, -3.0]
    assert "perplexity 20.086" in scores[0].raw


def test_perplexity_errors():
    judge = PerplexityJudge(texts=["x"])
    with pytest.raises(JudgeError, match="needs the candidate model"):
        judge.score([S("a")])
    with pytest.raises(JudgeError, match="cannot score texts"):
        judge.score([S("a")], generator=_Gen(None))
    with pytest.raises(ConfigError, match="texts"):
        build_judge("perplexity")


def test_register_judge_and_entry_points(monkeypatch):
    from importlib.metadata import EntryPoint

    import evomerge.registry as registry
    from evomerge.judge import JUDGES

    register_judge("shouty", lambda *, name, options, context: LengthJudge(name=name))
    try:
        assert build_judge("shouty", name="inst").name == "inst"
    finally:
        JUDGES.unregister("shouty")
    with pytest.raises(ValueError, match="already registered"):
        register_judge("length", lambda **kw: LengthJudge())

    ep = EntryPoint(
        name="plugin_len",
        value="evomerge.judge._local:LengthJudge.from_options",
        group=ENTRY_POINT_GROUP,
    )
    monkeypatch.setattr(
        registry, "entry_points", lambda group: [ep] if group == ENTRY_POINT_GROUP else []
    )
    judge = build_judge("plugin_len", options={"min_chars": 1, "max_chars": 2})
    assert isinstance(judge, LengthJudge) and judge.score([S("abcd")])[0].value == 0.5
