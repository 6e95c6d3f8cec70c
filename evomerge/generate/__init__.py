"""Generation: the ``Generator`` protocol, the ``hf`` and ``vllm`` backends, prompt sets,
personas and persona-fact retrieval.

Per trial a worker calls ``generator.load_weights(...)`` then
``generator.generate([p.prompt for p in items], cfg.params)``; ``items`` come from
``build_prompt_items(cfg, tokenizer_path=...)`` once per run.
"""

from evomerge.generate._config import (
    DTYPES,
    TEMPLATE_FIELDS,
    GenerationConfig,
    GenerationParams,
    RetrievalConfig,
    template_fields,
)
from evomerge.generate._device import resolve_device, resolve_dtype
from evomerge.generate._hf import HFGenerator, HFOptions
from evomerge.generate._path_model import PathModel
from evomerge.generate._prompts import (
    Persona,
    PromptItem,
    PromptRecord,
    default_system_prompt,
    format_context,
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
from evomerge.generate._render import build_prompt_items, render_chat
from evomerge.generate._retrieval import (
    Embedder,
    FactRetriever,
    SentenceTransformerEmbedder,
    build_embedder,
    cosine_similarity,
    select_facts,
)
from evomerge.generate._stopping import cut_at_stop
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
    "PathModel",
    "Persona",
    "PromptItem",
    "PromptRecord",
    "RetrievalConfig",
    "SentenceTransformerEmbedder",
    "VLLMGenerator",
    "VLLMOptions",
    "available_generators",
    "build_embedder",
    "build_generator",
    "build_prompt_items",
    "copy_named_tensors",
    "cosine_similarity",
    "cut_at_stop",
    "default_system_prompt",
    "format_context",
    "get_generator_factory",
    "load_persona",
    "load_prompt_set",
    "register_generator",
    "render_chat",
    "resolve_device",
    "resolve_dtype",
    "select_facts",
    "template_fields",
    "weight_targets",
]
