"""Prompt sets, personas, rendering (chat template and Llama-2 string), retrieval."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from evomerge.exceptions import ConfigError
from evomerge.generate import (
    FactRetriever,
    GenerationConfig,
    RetrievalConfig,
    build_prompt_items,
    load_persona,
    load_prompt_set,
)
from evomerge.generate._retrieval import cosine_similarity, select_facts

LLAMA2 = "[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{question} [/INST]"
FACTS = ["I live in Kyoto.", "I love green tea.", "My sister is a pilot."]
PERSONA = {
    "name": "Aiko",
    "profile": "A cheerful tea-shop owner.",
    "examples": ["user: hi", "Aiko: Welcome!"],
    "facts": FACTS,
}


def _write_jsonl(path: Path, rows: Sequence[object]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    prompts = _write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"id": "a", "question": "Where do you live?", "reference": "Kyoto"},
            {"question": "What do you drink?"},
            "",
            {"id": 7, "question": "Tell me about your family.", "tags": ["x"]},
        ],
    )
    persona = tmp_path / "persona.yaml"
    persona.write_text(
        "name: Aiko\nprofile: A cheerful tea-shop owner.\nexamples:\n  - 'user: hi'\n  - 'Aiko: Welcome!'\n"
        "facts:\n" + "".join(f"  - {f}\n" for f in FACTS)
    )
    return {"prompts": prompts, "persona": persona}


def test_load_prompt_set_ids_references_and_blank_lines(files: dict[str, Path]) -> None:
    recs = load_prompt_set(files["prompts"])
    assert [r.id for r in recs] == ["a", "1", "7"]
    assert recs[0].reference == "Kyoto" and recs[1].reference is None
    assert recs[2].question == "Tell me about your family."


def test_bad_prompt_lines_all_reported_with_line_numbers(tmp_path: Path) -> None:
    bad = _write_jsonl(
        tmp_path / "bad.jsonl",
        [
            {"id": "x", "question": "ok"},
            "{not json",
            {"question": ""},
            ["list"],
            {"id": "x", "question": "dup"},
            {"question": "q", "reference": 3},
        ],
    )
    with pytest.raises(ConfigError) as err:
        load_prompt_set(bad)
    msg = str(err.value)
    assert f"{bad}: 5 invalid line(s)" in msg
    for needle in (  # every bad line, each with the file's name and its line number
        "2: invalid JSON",
        "3: 'question'",
        "4: expected a JSON object",
        "5: duplicate id 'x' (first on line 1)",
        "6: 'reference'",
    ):
        assert f"{bad}:{needle}" in msg
    with pytest.raises(ConfigError, match="empty"):
        load_prompt_set(_write_jsonl(tmp_path / "empty.jsonl", [""]))
    with pytest.raises(ConfigError, match="cannot read"):
        load_prompt_set(tmp_path / "missing.jsonl")


def test_a_file_that_is_not_utf8_is_named_with_line_and_column(tmp_path: Path) -> None:
    sjis = tmp_path / "prompts.jsonl"
    text = '{"question": "hello"}\n{"question": "お元気ですか"}\n'
    sjis.write_bytes(text.encode("shift_jis"))
    with pytest.raises(ConfigError) as err:
        load_prompt_set(sjis)
    msg = str(err.value)
    assert msg.startswith(f"{sjis}:2:15: not UTF-8 text (byte 0x82)") and "iconv" in msg
    persona = tmp_path / "persona.yaml"
    persona.write_bytes("name: お嬢様\n".encode("cp932"))
    with pytest.raises(ConfigError, match=r"persona.yaml:1:7: not UTF-8 text"):
        load_persona(persona)
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + b'{"question": "hi"}\n')
    assert [r.question for r in load_prompt_set(bom)] == ["hi"]  # a UTF-8 BOM is fine


def test_persona_yaml_and_json_agree(files: dict[str, Path], tmp_path: Path) -> None:
    as_json = tmp_path / "persona.json"
    as_json.write_text(json.dumps(PERSONA))
    y, j = load_persona(files["persona"]), load_persona(as_json)
    assert y == j
    assert y.examples == "user: hi\nAiko: Welcome!" and y.facts == tuple(FACTS)
    (tmp_path / "bad.yaml").write_text("name: 3\nfact: [a]\n")
    with pytest.raises(ConfigError, match=r"(?s)bad.yaml: 2 invalid.*name.*fact: Extra inputs"):
        load_persona(tmp_path / "bad.yaml")


def test_chat_template_rendering(files: dict[str, Path], tiny_dir: Path) -> None:
    cfg = GenerationConfig(prompts=files["prompts"], persona=files["persona"])
    items = build_prompt_items(cfg, tokenizer_path=tiny_dir)
    assert [i.id for i in items] == ["a", "1", "7"]
    first = items[0]
    # the tiny tokenizer's template: "<role>: <content>\n" per message, then "assistant: "
    assert first.prompt.startswith("system: You are Aiko.\n\nA cheerful tea-shop owner.")
    assert "Example dialogue:\nuser: hi\nAiko: Welcome!" in first.prompt
    assert (
        "Facts about you:\n- I live in Kyoto.\n- I love green tea.\n- My sister is a pilot."
        in first.prompt
    )
    assert first.prompt.endswith("user: Where do you live?\nassistant: ")
    assert first.reference == "Kyoto" and first.facts == tuple(FACTS)
    assert first.profile == "A cheerful tea-shop owner." and first.context.count("- ") == 3


def test_chat_template_without_persona_has_no_system_turn(
    files: dict[str, Path], tiny_dir: Path
) -> None:
    cfg = GenerationConfig(prompts=files["prompts"], max_prompts=1)
    (item,) = build_prompt_items(cfg, tokenizer_path=tiny_dir)
    assert item.prompt == "user: Where do you live?\nassistant: "
    assert item.context == "" and item.facts == ()


def test_llama2_template_string_needs_no_tokenizer(files: dict[str, Path], tmp_path: Path) -> None:
    cfg = GenerationConfig(
        prompts=files["prompts"],
        persona=files["persona"],
        template=LLAMA2,
        system_prompt="You are {name}, {profile}\n{context}",
    )
    items = build_prompt_items(cfg, tokenizer_path=tmp_path / "no-tokenizer-here")
    assert items[1].prompt == (
        "[INST] <<SYS>>\nYou are Aiko, A cheerful tea-shop owner.\n"
        "- I live in Kyoto.\n- I love green tea.\n- My sister is a pilot.\n<</SYS>>\n\nWhat do you drink? [/INST]"
    )


def test_template_can_use_every_field(files: dict[str, Path], tmp_path: Path) -> None:
    cfg = GenerationConfig(
        prompts=files["prompts"],
        persona=files["persona"],
        max_prompts=1,
        template="{name}|{profile}|{examples}|{question}|{{literal}}",
    )
    (item,) = build_prompt_items(cfg, tokenizer_path=tmp_path)
    assert (
        item.prompt
        == "Aiko|A cheerful tea-shop owner.|user: hi\nAiko: Welcome!|Where do you live?|{literal}"
    )


def test_heldout_split_and_errors(files: dict[str, Path], tmp_path: Path) -> None:
    cfg = GenerationConfig(prompts=files["prompts"], template="{question}")
    with pytest.raises(ConfigError, match="heldout_prompts is not set"):
        build_prompt_items(cfg, tokenizer_path=tmp_path, split="heldout")
    held = _write_jsonl(tmp_path / "h.jsonl", [{"question": "held?"}])
    items = build_prompt_items(
        cfg.model_copy(update={"heldout_prompts": held}), tokenizer_path=tmp_path, split="heldout"
    )
    assert [i.prompt for i in items] == ["held?"]


def test_tokenizer_without_chat_template(
    files: dict[str, Path], tiny_dir: Path, tmp_path: Path
) -> None:
    import shutil

    tok_dir = tmp_path / "tok"
    shutil.copytree(tiny_dir, tok_dir)
    for name in ("chat_template.jinja", "chat_template.json"):
        (tok_dir / name).unlink(missing_ok=True)
    cfg_path = tok_dir / "tokenizer_config.json"
    tc = json.loads(cfg_path.read_text())
    tc.pop("chat_template", None)
    cfg_path.write_text(json.dumps(tc))
    cfg = GenerationConfig(prompts=files["prompts"])
    with pytest.raises(ConfigError, match=r"no chat template; set generation.template"):
        build_prompt_items(cfg, tokenizer_path=tok_dir)


class KeywordEmbedder:
    """Deterministic fake: one dimension per keyword, counted in lower-cased text."""

    def __init__(self, keywords: Sequence[str]) -> None:
        self.keywords = list(keywords)
        self.calls: list[list[str]] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return np.array(
            [[t.lower().count(k) for k in self.keywords] for t in texts], dtype=np.float32
        )


def test_cosine_and_selection() -> None:
    sims = cosine_similarity(
        np.array([[1.0, 0.0], [0.0, 0.0]]), np.array([[2.0, 0.0], [1.0, 1.0], [0.0, 3.0]])
    )
    np.testing.assert_allclose(sims, [[1.0, np.sqrt(0.5), 0.0], [0.0, 0.0, 0.0]])
    facts = ["a", "b", "c", "d"]
    assert select_facts(np.array([0.8, 0.75, 0.9, 0.74]), facts, threshold=0.75) == ("c", "a", "b")
    assert select_facts(np.array([0.8, 0.8, 0.9, 0.1]), facts, threshold=0.75, top_k=2) == (
        "c",
        "a",
    )
    assert select_facts(np.array([0.1, 0.2, 0.3, 0.4]), facts, threshold=0.75) == ()


def test_retriever_threshold_behaviour() -> None:
    emb = KeywordEmbedder(["kyoto", "tea", "sister", "live"])
    r = FactRetriever(facts=FACTS, embedder=emb, threshold=0.75)
    assert len(emb.calls) == 1  # facts embedded once
    got = r.retrieve(["Do you live in Kyoto?", "Any tea?", "What is the weather?"])
    # "live in kyoto" = (1,0,0,1) vs fact 1 (1,0,0,1): 1.0; tea facts are orthogonal
    assert got == [("I live in Kyoto.",), ("I love green tea.",), ()]
    low = FactRetriever(facts=FACTS, embedder=emb, threshold=0.5).retrieve(["kyoto"])
    assert low == [("I live in Kyoto.",)]  # cos((1,0,0,0),(1,0,0,1)) = 0.707 >= 0.5
    none = FactRetriever(facts=FACTS, embedder=emb, threshold=0.75).retrieve(["kyoto"])
    assert none == [()]  # 0.707 < 0.75
    assert len(emb.calls) == 6  # per retriever: the facts once, then one call per retrieve()


def test_retrieval_in_build_prompt_items(files: dict[str, Path], tmp_path: Path) -> None:
    cfg = GenerationConfig(
        prompts=files["prompts"],
        persona=files["persona"],
        template="{context}|{question}",
        retrieval=RetrievalConfig(model=tmp_path / "unused", threshold=0.75),
    )
    emb = KeywordEmbedder(["kyoto", "tea", "sister", "live", "drink", "family"])
    items = build_prompt_items(cfg, tokenizer_path=tmp_path, embedder=emb)
    assert [i.context for i in items] == ["", "", ""]  # no keyword overlap above 0.75
    emb2 = KeywordEmbedder(["live", "tea", "sister"])
    items = build_prompt_items(cfg, tokenizer_path=tmp_path, embedder=emb2)
    assert (
        items[0].context == "- I live in Kyoto."
        and items[0].prompt == "- I live in Kyoto.|Where do you live?"
    )
    assert items[0].facts == tuple(FACTS)  # judges still see every fact
    assert [i.context for i in items[1:]] == ["", ""]  # "drink", "family": no similar fact
    emb3 = KeywordEmbedder(["live", "tea", "sister", "family"])
    cfg3 = cfg.model_copy(
        update={"retrieval": RetrievalConfig(model=tmp_path, threshold=0.0, top_k=2)}
    )
    items = build_prompt_items(cfg3, tokenizer_path=tmp_path, embedder=emb3)
    assert (
        items[0].context == "- I live in Kyoto.\n- I love green tea."
    )  # threshold 0 keeps zero-similarity facts too; top_k=2


def test_retrieval_requires_persona(files: dict[str, Path], tmp_path: Path) -> None:
    cfg = GenerationConfig(
        prompts=files["prompts"], template="{question}", retrieval=RetrievalConfig(model=tmp_path)
    )
    with pytest.raises(ConfigError, match=r"needs generation.persona"):
        build_prompt_items(cfg, tokenizer_path=tmp_path, embedder=KeywordEmbedder(["x"]))


def test_per_prompt_facts_override_the_persona_facts(
    tmp_path: Path, files: dict[str, Path], tiny_dir: Path
) -> None:
    prompts = _write_jsonl(
        tmp_path / "f.jsonl",
        [
            {"id": "q", "question": "Where do you live?", "facts": ["Kyoto|京都"]},
            {"id": "r", "question": "What do you drink?"},
        ],
    )
    cfg = GenerationConfig(prompts=prompts, persona=files["persona"])
    by_id = {i.id: i for i in build_prompt_items(cfg, tokenizer_path=tiny_dir)}
    assert by_id["q"].facts == ("Kyoto|京都",)
    assert by_id["r"].facts == tuple(FACTS)
    # the prompt itself still carries every persona fact as context
    assert by_id["q"].context.count("- ") == len(FACTS)


def test_prompt_facts_must_be_a_list_of_strings(tmp_path: Path) -> None:
    bad = _write_jsonl(tmp_path / "bad.jsonl", [{"question": "a", "facts": "Kyoto"}])
    with pytest.raises(ConfigError, match=r"bad.jsonl:1: 'facts' must be a list of strings"):
        load_prompt_set(bad)
