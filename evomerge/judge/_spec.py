"""LLM judge definitions: one YAML file per judge, found in an ordered list of folders.

A judge YAML (see ``evomerge/data/judges/*.yaml``)::

    description: Does the answer sound like the character?
    system_prompt: You are a strict evaluator ...
    user_template: |
      Profile: {profile}
      Question: {question}
      Answer: {answer}
    scale: {min: 1, max: 7}
    parsing: last_line_integer        # or logprob_expectation
    structured_choice: false          # true: the reply must be one of the scale's values
    samples: 1                        # n replies per answer, averaged (NaN ones dropped)
    temperature: 0.0
    max_tokens: 512

``structured_choice: true`` sends vLLM's structured-outputs choice of the scale's values
(``"1"`` .. ``"7"``), so a vLLM-served judge can only answer a valid score (with
``logprob_expectation`` the top log-probabilities are then those of the valid scores).
Servers without structured outputs reject it, with an error naming the field.

The judge's name is the file's stem. Templates may use only the placeholders in
:data:`TEMPLATE_FIELDS`; literal braces are written ``{{`` and ``}}``. Both are checked
when the file is loaded, so a typo fails before any request is sent.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from evomerge._yaml import load_yaml_model, validate_model
from evomerge.exceptions import ConfigError
from evomerge.judge._types import Sample
from evomerge.templates import check_template, template_fields

logger = logging.getLogger(__name__)

__all__ = [
    "TEMPLATE_FIELDS",
    "LLMJudgeDefinition",
    "Scale",
    "builtin_judges_dir",
    "definition_with_overrides",
    "discover_llm_judges",
    "load_llm_judge",
    "render_messages",
]

#: The placeholders a judge template may use: the fields of :class:`Sample`.
TEMPLATE_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Sample))


def _check_template(template: str) -> str:
    check_template(template, TEMPLATE_FIELDS)
    return template


class Scale(BaseModel):
    """The integer score range, inclusive."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min: int = 1
    max: int = 7

    @field_validator("max")
    @classmethod
    def _ordered(cls, v: int, info: ValidationInfo) -> int:
        lo = info.data.get("min")
        if lo is not None and lo >= v:
            raise ValueError(f"must be above scale.min ({lo})")
        return v


class LLMJudgeDefinition(BaseModel):
    """The content of one judge YAML file (the name is the file stem)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    description: str = ""
    system_prompt: str = ""
    user_template: str
    scale: Scale = Scale()
    parsing: Literal["last_line_integer", "logprob_expectation"] = "last_line_integer"
    structured_choice: bool = False
    samples: int = Field(default=1, ge=1, le=64)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(default=512, ge=1)
    top_logprobs: int = Field(default=20, ge=1, le=20)
    # Defaults for the endpoint; a run.yaml or the CLI overrides them.
    endpoint: str | None = None
    model: str | None = None
    api_key_env: str | None = None

    def score_choices(self) -> list[str]:
        """Every score on the scale as text, lowest first (the structured-output choices)."""
        return [str(v) for v in range(self.scale.min, self.scale.max + 1)]

    @field_validator("system_prompt", "user_template")
    @classmethod
    def _templates(cls, v: str) -> str:
        return _check_template(v)

    @field_validator("user_template")
    @classmethod
    def _shows_answer(cls, v: str) -> str:
        if "answer" not in template_fields(v):
            raise ValueError("the user template must contain {answer}")
        return v


def _field_values(sample: Sample) -> dict[str, str]:
    values = {name: getattr(sample, name) for name in TEMPLATE_FIELDS}
    values["reference"] = sample.reference or ""
    values["facts"] = "\n".join(f"- {f}" for f in sample.facts)
    return values


def render_messages(defn: LLMJudgeDefinition, sample: Sample) -> list[dict[str, str]]:
    """The chat messages sent to the judge for ``sample`` (system first when set)."""
    values = _field_values(sample)
    messages = []
    if defn.system_prompt.strip():
        messages.append(
            {"role": "system", "content": defn.system_prompt.format_map(values).strip()}
        )
    messages.append({"role": "user", "content": defn.user_template.format_map(values).strip()})
    return messages


def load_llm_judge(path: str | Path) -> LLMJudgeDefinition:
    """Load and check one judge YAML. Raises ConfigError naming the file and field."""
    return load_yaml_model(LLMJudgeDefinition, path)


def builtin_judges_dir() -> Path:
    """The folder of judge YAMLs shipped inside the package."""
    return Path(str(resources.files("evomerge") / "data" / "judges"))


def _search_dirs(extra: Iterable[str | Path]) -> list[Path]:
    """The shipped judges, then the given folders; nothing is looked up implicitly (a
    ``judges/`` folder in the working directory is used only when named)."""
    return [builtin_judges_dir(), *(Path(d) for d in extra)]


def discover_llm_judges(judges_dirs: Iterable[str | Path] = ()) -> dict[str, Path]:
    """Judge name -> YAML path, searching the shipped judges, then ``judges_dirs`` in order.

    Later folders override earlier ones; each override is logged. A folder in
    ``judges_dirs`` that does not exist is a ConfigError.
    """
    extra = list(judges_dirs)
    for d in extra:
        if not Path(d).is_dir():
            raise ConfigError(
                f"judges_dirs: {str(d)!r} is not a folder; pass a folder of judge *.yaml files"
            )
    found: dict[str, Path] = {}
    for folder in _search_dirs(extra):
        for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
            old = found.get(path.stem)
            if old is not None and old.resolve() != path.resolve():
                logger.info("Judge %r from %s overrides the one in %s", path.stem, path, old)
            found[path.stem] = path
    return found


def definition_with_overrides(
    defn: LLMJudgeDefinition, overrides: Mapping[str, Any], *, source: str
) -> LLMJudgeDefinition:
    """``defn`` with some fields replaced (e.g. ``samples`` from a run.yaml), re-validated."""
    return validate_model(LLMJudgeDefinition, {**defn.model_dump(), **overrides}, source=source)
