"""Generation: the ``Generator`` protocol, the ``hf`` and ``vllm`` backends, prompt sets,
personas and persona-fact retrieval.

Per trial a worker calls ``generator.load_weights(...)`` then
``generator.generate([p.prompt for p in items], cfg.params)``; ``items`` come from
``build_prompt_items(cfg, tokenizer_path=...)`` once per run.

The backends and weight helpers need torch and are imported on first use of their names
(:class:`HFGenerator`, :class:`VLLMGenerator`, ...), so configs and prompt sets load
without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from evomerge.generate._config import (
    DTYPES,
    TEMPLATE_FIELDS,
    GenerationConfig,
    GenerationParams,
    RetrievalConfig,
)
from evomerge.generate._prompts import (
    Persona,
    PromptItem,
    QuestionInfo,
    load_persona,
    load_prompt_set,
)
from evomerge.generate._protocol import Generator
from evomerge.generate._registry import (
    ENTRY_POINT_GROUP,
    GENERATORS,
    available_generators,
    build_generator,
    get_generator_factory,
    register_generator,
)
from evomerge.generate._render import build_prompt_items
from evomerge.generate._retrieval import (
    Embedder,
    FactRetriever,
    SentenceTransformerEmbedder,
    build_embedder,
)
from evomerge.generate._stopping import cut_at_stop

if TYPE_CHECKING:
    from evomerge.generate._device import resolve_device, resolve_dtype
    from evomerge.generate._hf import HFGenerator, HFOptions
    from evomerge.generate._vllm import VLLMGenerator, VLLMOptions
    from evomerge.generate._weights import copy_named_tensors, weight_targets

__all__ = [
    "DTYPES",
    "ENTRY_POINT_GROUP",
    "GENERATORS",
    "TEMPLATE_FIELDS",
    "Embedder",
    "FactRetriever",
    "GenerationConfig",
    "GenerationParams",
    "Generator",
    "HFGenerator",
    "HFOptions",
    "Persona",
    "PromptItem",
    "QuestionInfo",
    "RetrievalConfig",
    "SentenceTransformerEmbedder",
    "VLLMGenerator",
    "VLLMOptions",
    "available_generators",
    "build_embedder",
    "build_generator",
    "build_prompt_items",
    "copy_named_tensors",
    "cut_at_stop",
    "get_generator_factory",
    "load_persona",
    "load_prompt_set",
    "register_generator",
    "resolve_device",
    "resolve_dtype",
    "weight_targets",
]

# name -> module, for the names that need torch (imported on first use)
_LAZY = {
    "resolve_device": "evomerge.generate._device",
    "resolve_dtype": "evomerge.generate._device",
    "HFGenerator": "evomerge.generate._hf",
    "HFOptions": "evomerge.generate._hf",
    "VLLMGenerator": "evomerge.generate._vllm",
    "VLLMOptions": "evomerge.generate._vllm",
    "copy_named_tensors": "evomerge.generate._weights",
    "weight_targets": "evomerge.generate._weights",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'evomerge.generate' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
