"""The ``generation:`` section of run.yaml: backend, sampling parameters, prompts, retrieval.

Every model here is frozen and forbids unknown keys; pydantic collects every invalid field
at once, and :func:`evomerge._yaml.validate_model` turns them into one ``ConfigError``
naming the file and each field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from evomerge.dtypes import WORKING_DTYPES
from evomerge.generate._prompts import PROMPT_FIELDS
from evomerge.templates import check_template, template_fields

__all__ = [
    "DTYPES",
    "TEMPLATE_FIELDS",
    "GenerationConfig",
    "GenerationParams",
    "RetrievalConfig",
]

#: Accepted ``dtype`` values. ``auto``: float32 on CPU, bfloat16 on CUDA.
DTYPES = ("auto", *WORKING_DTYPES)

#: The fields a prompt template (or ``system_prompt``) may use, as ``{name}``: the
#: persona's name, the system prompt, and what the candidate may see of the question.
TEMPLATE_FIELDS: tuple[str, ...] = ("system", "name", *PROMPT_FIELDS)


def _check_template(value: str | None, allowed: tuple[str, ...]) -> str | None:
    if value is None:
        return None
    check_template(value, allowed)
    return value


class GenerationParams(BaseModel):
    """Decoding parameters shared by every backend.

    ``temperature == 0`` is greedy decoding (``top_p`` and ``seed`` are then unused). With
    ``temperature > 0`` the same ``seed`` and prompts give the same answers. ``stop`` cuts
    each answer before the first occurrence of any of its strings; generation also stops
    at the tokenizer's EOS token. ``batch_size`` is the number of prompts per forward pass
    (the ``hf`` backend; ``vllm`` schedules its own batches).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_new_tokens: int = Field(default=128, ge=1)
    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int = Field(default=0, ge=0)
    stop: tuple[str, ...] = ()
    batch_size: int = Field(default=8, ge=1)

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop_string(cls, v: Any) -> Any:
        return (v,) if isinstance(v, str) else v

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if any(s == "" for s in v):
            raise ValueError(
                "stop strings must be non-empty (an empty string would cut every answer to '')"
            )
        return v


class RetrievalConfig(BaseModel):
    """Per-question retrieval of persona facts by embedding cosine similarity.

    ``model`` is a local sentence-transformers model directory (needs the ``embed`` extra).
    Facts whose similarity to the question is at least ``threshold`` are kept, most
    similar first, at most ``top_k`` of them (all when None).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: Path
    threshold: float = Field(default=0.75, ge=-1.0, le=1.0)
    top_k: int | None = Field(default=None, ge=1)
    device: str = "cpu"


class GenerationConfig(BaseModel):
    """The ``generation:`` section of run.yaml.

    ``template`` None uses the tokenizer's chat template (system message + user question);
    otherwise it is a ``str.format`` template over :data:`TEMPLATE_FIELDS`, e.g. Llama-2's
    ``"[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{question} [/INST]"``. ``system_prompt`` is
    itself a template over the same fields (minus ``system`` and ``question``); when None
    and a persona is given, a default persona system prompt is used.
    ``backend_options`` go to the backend (e.g. vllm's ``gpu_memory_utilization``); each
    backend validates its own. Relative paths are resolved by :meth:`resolve_paths`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: str = "hf"
    dtype: str = "auto"
    params: GenerationParams = GenerationParams()
    prompts: Path
    heldout_prompts: Path | None = None
    persona: Path | None = None
    template: str | None = None
    system_prompt: str | None = None
    retrieval: RetrievalConfig | None = None
    max_prompts: int | None = Field(default=None, ge=1)
    backend_options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        from evomerge.generate._registry import available_generators

        choices = available_generators()
        if v not in choices:
            raise ValueError(f"Unknown generation backend {v!r}. Available: {', '.join(choices)}")
        return v

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, v: str) -> str:
        if v not in DTYPES:
            raise ValueError(f"Unknown dtype {v!r}. Available: {', '.join(DTYPES)}")
        return v

    @field_validator("template")
    @classmethod
    def _valid_template(cls, v: str | None) -> str | None:
        checked = _check_template(v, TEMPLATE_FIELDS)
        if checked is not None and "question" not in template_fields(checked):
            raise ValueError("the template must contain {question}")
        return checked

    @field_validator("system_prompt")
    @classmethod
    def _valid_system_prompt(cls, v: str | None) -> str | None:
        return _check_template(
            v, tuple(f for f in TEMPLATE_FIELDS if f not in ("system", "question"))
        )

    def resolve_paths(self, root: Path) -> GenerationConfig:
        """A copy with every relative path (prompts, heldout, persona, retrieval model) made
        relative to ``root`` (the run.yaml's folder). Absolute paths are kept."""
        root = Path(root)

        def fix(p: Path | None) -> Path | None:
            return None if p is None or p.is_absolute() else root / p

        update: dict[str, Any] = {}
        for name in ("prompts", "heldout_prompts", "persona"):
            fixed = fix(getattr(self, name))
            if fixed is not None:
                update[name] = fixed
        if self.retrieval is not None and not self.retrieval.model.is_absolute():
            update["retrieval"] = self.retrieval.model_copy(
                update={"model": root / self.retrieval.model}
            )
        return self.model_copy(update=update)
