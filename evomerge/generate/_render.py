"""From the ``generation:`` config to rendered :class:`PromptItem` s.

Per question: retrieve persona facts (optional), render the system prompt, then either the
tokenizer's chat template (system + user message, ``add_generation_prompt=True``) or the
configured template string.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from evomerge.exceptions import ConfigError, GenerationError
from evomerge.generate._prompts import (
    Persona,
    PromptItem,
    default_system_prompt,
    format_context,
    load_persona,
    load_prompt_set,
)
from evomerge.generate._retrieval import Embedder, FactRetriever, build_embedder

if TYPE_CHECKING:
    from evomerge.generate._config import GenerationConfig

logger = logging.getLogger(__name__)

__all__ = ["build_prompt_items", "render_chat"]


def render_chat(tokenizer: Any, system: str, question: str) -> str:
    """The chat-template rendering of an optional system message and one user message.

    Templates that reject a system role (e.g. Gemma's) get the system text prepended to
    the user message instead.
    """
    messages = [{"role": "user", "content": question}]
    if system:
        try:
            return str(
                tokenizer.apply_chat_template(
                    [{"role": "system", "content": system}, *messages],
                    tokenize=False,
                    add_generation_prompt=True,
                )
            )
        except Exception as err:  # jinja2 TemplateError raised by the template itself
            logger.debug(
                "chat template rejected a system message (%s); merging it into the user turn", err
            )
            messages = [{"role": "user", "content": f"{system}\n\n{question}"}]
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


def _load_tokenizer(tokenizer_path: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(tokenizer_path))
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load a tokenizer from {tokenizer_path}: {err}") from err
    if not getattr(tok, "chat_template", None):
        raise ConfigError(
            f"the tokenizer in {tokenizer_path} has no chat template; set generation.template "
            "(e.g. '[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{question} [/INST]')"
        )
    return tok


def _contexts(
    cfg: GenerationConfig, persona: Persona, questions: list[str], embedder: Embedder | None
) -> list[str]:
    if cfg.retrieval is None:
        return [format_context(persona.facts)] * len(questions)
    if not persona.facts:
        logger.warning(
            "generation.retrieval is set but the persona has no facts; context stays empty"
        )
        return [""] * len(questions)
    retriever = FactRetriever(
        facts=persona.facts,
        embedder=embedder if embedder is not None else build_embedder(cfg.retrieval),
        threshold=cfg.retrieval.threshold,
        top_k=cfg.retrieval.top_k,
    )
    return [format_context(f) for f in retriever.retrieve(questions)]


def build_prompt_items(
    cfg: GenerationConfig,
    *,
    tokenizer_path: Path,
    split: Literal["search", "heldout"] = "search",
    embedder: Embedder | None = None,
    tokenizer: Any = None,
) -> list[PromptItem]:
    """Read the prompt set of ``split``, retrieve facts, render every prompt.

    ``tokenizer_path`` is only read when ``cfg.template`` is None (chat-template mode);
    ``tokenizer`` may pass an already loaded one. ``embedder`` overrides the one built from
    ``cfg.retrieval`` (tests inject a fake). Paths in ``cfg`` must already be resolved
    (:meth:`GenerationConfig.resolve_paths`). At most ``cfg.max_prompts`` items, in file order.

    Raises ConfigError for unreadable or invalid files, a missing heldout set, retrieval
    without a persona, or a tokenizer without a chat template.
    """
    if split == "search":
        if cfg.prompts is None:
            raise ConfigError(
                "generation.prompts is not set; add a JSONL prompt set for judges that score answers"
            )
        path = cfg.prompts
    elif split == "heldout":
        if cfg.heldout_prompts is None:
            raise ConfigError(
                "generation.heldout_prompts is not set; add a JSONL file to evaluate on held-out prompts"
            )
        path = cfg.heldout_prompts
    else:
        raise ValueError(f"split must be 'search' or 'heldout', got {split!r}")
    records = load_prompt_set(path)
    if cfg.max_prompts is not None:
        records = records[: cfg.max_prompts]
    if cfg.retrieval is not None and cfg.persona is None:
        raise ConfigError(
            "generation.retrieval needs generation.persona (a persona file with facts)"
        )
    persona = load_persona(cfg.persona) if cfg.persona is not None else Persona()
    contexts = _contexts(cfg, persona, [r.question for r in records], embedder)
    tok = None
    if cfg.template is None:
        tok = tokenizer if tokenizer is not None else _load_tokenizer(Path(tokenizer_path))

    items: list[PromptItem] = []
    for rec, context in zip(records, contexts, strict=True):
        fields = {
            "name": persona.name,
            "profile": persona.profile,
            "examples": persona.examples,
            "context": context,
        }
        if cfg.system_prompt is not None:
            system = cfg.system_prompt.format_map(fields)
        elif cfg.persona is not None:
            system = default_system_prompt(persona, context)
        else:
            system = ""
        if cfg.template is not None:
            prompt = cfg.template.format_map({**fields, "system": system, "question": rec.question})
        else:
            try:
                prompt = render_chat(tok, system, rec.question)
            except Exception as err:
                raise GenerationError(f"chat template failed on prompt {rec.id!r}: {err}") from err
        items.append(
            PromptItem(
                id=rec.id,
                question=rec.question,
                prompt=prompt,
                reference=rec.reference,
                context=context,
                profile=persona.profile,
                examples=persona.examples,
                facts=rec.facts if rec.facts is not None else persona.facts,
            )
        )
    logger.info("built %d %s prompts from %s", len(items), split, path)
    return items
