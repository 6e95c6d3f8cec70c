"""Prompt sets (JSONL), persona files (YAML/JSON) and prompt rendering.

A prompt set has one user query per line: ``{"id"?, "question", "reference"?, "facts"?}``
(``facts``: the facts this question asks for, which ``fact_recall`` checks instead of the
persona's whole list; other keys are ignored with a warning; a missing id becomes the
record's 0-based index). A
persona file holds ``name``, ``profile``, ``examples`` (example dialogue: a string or a
list of lines) and ``facts`` (a list of strings).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from evomerge._yaml import load_yaml, read_text, validate_model
from evomerge.exceptions import ConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "PROMPT_FIELDS",
    "Persona",
    "PromptItem",
    "PromptRecord",
    "QuestionInfo",
    "default_system_prompt",
    "format_context",
    "load_persona",
    "load_prompt_set",
]


@dataclass(frozen=True)
class PromptRecord:
    """One line of a prompt set."""

    id: str
    question: str
    reference: str | None = None
    facts: tuple[str, ...] | None = None  # None: the persona's facts apply


@dataclass(frozen=True, kw_only=True)
class QuestionInfo:
    """A question and what a judge may see next to its answer. The fields are declared here
    once: :class:`PromptItem` adds the rendered prompt, ``evomerge.judge.Sample`` the answer.

    ``context`` is the persona facts put into the prompt (the retrieved ones, or all of
    them without retrieval); ``facts`` are the facts the question asks for (from the
    prompt set), else the persona's full list.
    """

    question: str
    reference: str | None = None
    context: str = ""
    profile: str = ""
    examples: str = ""
    facts: tuple[str, ...] = ()


#: What judges may see but the candidate model must not (the answer key).
JUDGE_ONLY_FIELDS = ("reference", "facts")
#: The QuestionInfo fields a generation prompt may show.
PROMPT_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(QuestionInfo) if f.name not in JUDGE_ONLY_FIELDS
)


@dataclass(frozen=True, kw_only=True)
class PromptItem(QuestionInfo):
    """A fully rendered model input (``prompt``, for the prompt set's ``id``) plus what
    judges need to know about it (:class:`QuestionInfo`)."""

    id: str
    prompt: str


class Persona(BaseModel):
    """A character sheet: name, profile, example dialogue and facts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = ""
    profile: str = ""
    examples: str = ""
    facts: tuple[str, ...] = ()

    @field_validator("examples", mode="before")
    @classmethod
    def _join_lines(cls, v: Any) -> Any:
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            return "\n".join(v)
        return v


def load_prompt_set(path: str | Path) -> list[PromptRecord]:
    """Read a JSONL prompt set; one ConfigError with a ``file:line: ...`` line for every bad
    line (and for a file that is not UTF-8)."""
    path = Path(path)
    lines = read_text(path, what="the prompt set").splitlines()
    records: list[PromptRecord] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    ignored: set[str] = set()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            errors.append(f"{lineno}: invalid JSON: {err.msg}")
            continue
        if not isinstance(obj, dict):
            errors.append(f"{lineno}: expected a JSON object, got {type(obj).__name__}")
            continue
        q, ref = obj.get("question"), obj.get("reference")
        if not isinstance(q, str) or not q.strip():
            errors.append(f"{lineno}: 'question' must be a non-empty string (got {q!r})")
            continue
        if ref is not None and not isinstance(ref, str):
            errors.append(f"{lineno}: 'reference' must be a string (got {ref!r})")
            continue
        facts = obj.get("facts")
        if facts is not None and not (
            isinstance(facts, list) and all(isinstance(f, str) for f in facts)
        ):
            errors.append(f"{lineno}: 'facts' must be a list of strings (got {facts!r})")
            continue
        rid = str(obj["id"]) if obj.get("id") is not None else str(len(records))
        if rid in seen:
            errors.append(f"{lineno}: duplicate id {rid!r} (first on line {seen[rid]})")
            continue
        seen[rid] = lineno
        ignored |= set(obj) - {"id", "question", "reference", "facts"}
        records.append(
            PromptRecord(
                id=rid, question=q, reference=ref, facts=tuple(facts) if facts is not None else None
            )
        )
    if errors:
        raise ConfigError(
            f"{path}: {len(errors)} invalid line(s)\n" + "\n".join(f"  {path}:{e}" for e in errors)
        )
    if not records:
        raise ConfigError(
            f"{path}: the prompt set is empty; write one JSON object per line with a 'question'"
        )
    if ignored:
        logger.warning("%s: ignoring unknown key(s) %s", path, sorted(ignored))
    return records


def load_persona(path: str | Path) -> Persona:
    """Read a persona from ``.json`` or YAML; ConfigError naming the file and fields."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(read_text(path, what="the persona"))
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: invalid JSON: {err}") from None
    else:
        data = load_yaml(path)
    return validate_model(Persona, data, source=str(path))


def format_context(facts: tuple[str, ...]) -> str:
    """Facts as the ``{context}`` field: one ``- fact`` line each."""
    return "\n".join(f"- {f}" for f in facts)


def default_system_prompt(persona: Persona, context: str) -> str:
    """The system prompt used when a persona is given and ``system_prompt`` is not."""
    parts = [f"You are {persona.name}." if persona.name else "Stay in character."]
    if persona.profile:
        parts.append(persona.profile)
    if persona.examples:
        parts.append(f"Example dialogue:\n{persona.examples}")
    if context:
        parts.append(f"Facts about you:\n{context}")
    return "\n\n".join(parts)
