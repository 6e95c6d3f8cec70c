"""Judge YAMLs: the shipped ones load and render; malformed ones name file and field."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from evomerge.exceptions import ConfigError
from evomerge.judge import (
    TEMPLATE_FIELDS,
    Sample,
    available_judges,
    build_judge,
    builtin_judges_dir,
    discover_llm_judges,
    load_llm_judge,
)
from evomerge.judge._spec import render_messages

REPO = Path(__file__).resolve().parents[2]
SHIPPED = {"personality", "naturalness", "turn_taking", "fact_consistency"}

FULL = Sample(
    question="好きな飲み物は？",
    answer="紅茶ですわ。",
    profile="PROFILE-TEXT",
    examples="EXAMPLE-TEXT",
    reference="REFERENCE-TEXT",
    context="CONTEXT-TEXT",
    facts=("FACT-ONE", "FACT-TWO"),
)


def test_shipped_judges_load_and_render():
    found = {p.stem: p for p in builtin_judges_dir().glob("*.yaml")}
    assert set(found) == SHIPPED
    for name, path in found.items():
        defn = load_llm_judge(path)
        assert defn.scale.min == 1 and defn.scale.max == 7, name
        messages = render_messages(defn, FULL)
        text = "\n".join(m["content"] for m in messages)
        assert "紅茶ですわ。" in text and "好きな飲み物は？" in text, name
        assert not re.search(r"\{[a-z_]+\}", text), f"{name}: unfilled placeholder"
        assert "last line" in " ".join(messages[-1]["content"].split()), (
            name
        )  # asks for the score there
    personality = render_messages(load_llm_judge(found["personality"]), FULL)[-1]["content"]
    assert (
        "Is the response reflects the personalities and preferences of the character?"
        in personality
    )
    assert (
        "PROFILE-TEXT" in personality
        and "EXAMPLE-TEXT" in personality
        and "step by step" in personality
    )
    facts = render_messages(load_llm_judge(found["fact_consistency"]), FULL)[-1]["content"]
    assert "- FACT-ONE\n- FACT-TWO" in facts and "CONTEXT-TEXT" in facts


def test_repo_root_judges_match_the_packaged_copies():
    root = REPO / "judges"
    root_files = {p.name: p for p in root.glob("*.yaml")}
    assert set(root_files) == {p.name for p in builtin_judges_dir().glob("*.yaml")}
    for name, path in root_files.items():
        assert path.read_bytes() == (builtin_judges_dir() / name).read_bytes(), name


def test_malformed_yaml_names_file_and_every_field(tmp_path: Path):
    bad = tmp_path / "broken.yaml"
    bad.write_text(
        "user_template: 'Persona: {persona}\\nAnswer: {answer}'\n"
        "scale: {min: 7, max: 1}\n"
        "temperature: hot\n"
        "temprature: 0.1\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_llm_judge(bad)
    msg = str(info.value)
    assert str(bad) in msg
    for fragment in (
        "user_template",
        "{persona}",
        "Allowed: question, reference, context, profile, examples, facts, answer",
        "scale",
        "temperature",
        "temprature",
    ):
        assert fragment in msg, fragment


@pytest.mark.parametrize(
    "template, fragment",
    [
        ("Q: {question}", "must contain {answer}"),
        ("A: {answer} {", "invalid template syntax"),
        ("A: {answer.upper}", "unknown placeholder"),
        ("A: {answer} {0}", "unknown placeholder"),
    ],
)
def test_template_placeholders_are_checked_at_load(tmp_path: Path, template: str, fragment: str):
    path = tmp_path / "t.yaml"
    path.write_text(f"user_template: {template!r}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        load_llm_judge(path)


def test_literal_braces_render(tmp_path: Path):
    path = tmp_path / "json_judge.yaml"
    path.write_text(
        "user_template: 'Reply as {{\"score\": N}}. Answer: {answer}'\n", encoding="utf-8"
    )
    [msg] = render_messages(load_llm_judge(path), FULL)
    assert msg["content"] == 'Reply as {"score": N}. Answer: 紅茶ですわ。'
    assert set(TEMPLATE_FIELDS) >= {
        "profile",
        "examples",
        "question",
        "answer",
        "reference",
        "context",
    }


def test_later_dirs_override_and_log(tmp_path: Path, caplog):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "personality.yaml").write_text("user_template: 'A {answer}'\n", encoding="utf-8")
    (b / "personality.yaml").write_text("user_template: 'B {answer}'\n", encoding="utf-8")
    (b / "mine.yaml").write_text("user_template: 'M {answer}'\n", encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="evomerge.judge"):
        found = discover_llm_judges([a, b])
    assert found["personality"] == b / "personality.yaml" and found["mine"] == b / "mine.yaml"
    assert "overrides" in caplog.text and str(b / "personality.yaml") in caplog.text
    assert "naturalness" in found  # shipped judges stay available


def test_missing_judges_dir_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="not a folder"):
        discover_llm_judges([tmp_path / "nope"])


def test_unknown_judge_lists_the_choices():
    with pytest.raises(ConfigError) as info:
        build_judge("personalty")
    msg = str(info.value)
    assert "Unknown judge 'personalty'" in msg
    for name in (
        "personality",
        "naturalness",
        "length",
        "style_markers",
        "fact_recall",
        "bleu",
        "chrf",
        "perplexity",
    ):
        assert name in msg
    assert set(available_judges()) >= SHIPPED | {"length", "embedding_similarity"}


def test_llm_judge_rejects_unknown_options(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not take option"):
        build_judge(
            "personality", endpoint="http://127.0.0.1:1/v1", model="m", options={"scale": 3}
        )
