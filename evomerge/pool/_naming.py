"""Tensor naming: layer index and module type of a Hugging Face tensor name.

Covers Llama, Mistral, Qwen2, Gemma (``model.layers.N.self_attn.q_proj.weight``), GPT-2
(``transformer.h.N.attn.c_attn.weight``) and the usual generic stacks (``layers.N``,
``h.N``, ``blocks.N``, ``layer.N``, ``block.N``). Module types::

    q k v o qkv           attention projections (qkv: packed, e.g. GPT-2 c_attn)
    gate up down          gated MLP projections (Llama family; Mixtral's w1/w3/w2)
    mlp_in mlp_out        ungated MLP (GPT-2 c_fc/c_proj under mlp, fc1/fc2)
    norm embed lm_head    layer/final norms, token/position embeddings, output head
    other                 anything else (MoE routers, buffers, ...)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

__all__ = [
    "INPUT_EMBEDDINGS",
    "MODULE_TYPES",
    "OUTPUT_HEADS",
    "classify_tensor",
    "config_num_layers",
    "config_ties_embeddings",
    "is_vocab_tensor",
    "natural_key",
    "vocab_role",
]

MODULE_TYPES: tuple[str, ...] = (
    "q",
    "k",
    "v",
    "o",
    "qkv",
    "gate",
    "up",
    "down",
    "mlp_in",
    "mlp_out",
    "norm",
    "embed",
    "lm_head",
    "other",
)

# "<prefix>.layers.12.<rest>" -> 12; the first stack in the name wins (MoE expert indices
# come later in the name and are not layers).
_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer|block)\.(\d+)(?:\.|$)")

# Parameter names that end a tensor name; the module is the component before them.
_PARAM_SUFFIXES = frozenset({"weight", "bias", "scale", "g", "b"})

_BY_MODULE: dict[str, str] = {
    # attention
    "q_proj": "q",
    "query": "q",
    "wq": "q",
    "q": "q",
    "k_proj": "k",
    "key": "k",
    "wk": "k",
    "k": "k",
    "v_proj": "v",
    "value": "v",
    "wv": "v",
    "v": "v",
    "o_proj": "o",
    "out_proj": "o",
    "wo": "o",
    "o": "o",
    "qkv_proj": "qkv",
    "c_attn": "qkv",
    "query_key_value": "qkv",
    "wqkv": "qkv",
    "w_pack": "qkv",
    "qkv": "qkv",
    # gated MLP (Mixtral experts: w1 gate, w3 up, w2 down)
    "gate_proj": "gate",
    "w1": "gate",
    "up_proj": "up",
    "w3": "up",
    "down_proj": "down",
    "w2": "down",
    # ungated MLP
    "c_fc": "mlp_in",
    "fc1": "mlp_in",
    "fc_in": "mlp_in",
    "dense_h_to_4h": "mlp_in",
    "gate_up_proj": "mlp_in",
    "fc2": "mlp_out",
    "fc_out": "mlp_out",
    "dense_4h_to_h": "mlp_out",
}

#: Modules whose weight is the input token embedding [vocab, hidden]: Llama/Mistral/Qwen
#: (embed_tokens), GPT-2 (wte), BLOOM/Falcon (word_embeddings), Meta's original
#: (tok_embeddings), GPT-NeoX/Pythia (embed_in). The one list: pool and export use it.
INPUT_EMBEDDINGS: tuple[str, ...] = (
    "embed_tokens",
    "wte",
    "word_embeddings",
    "tok_embeddings",
    "embed_in",
)
#: Modules whose weight is the output head [vocab, hidden] (plus Meta's top-level ``output``).
OUTPUT_HEADS: tuple[str, ...] = ("lm_head", "embed_out")
_POSITION_EMBEDDINGS = ("wpe", "embed_positions", "position_embeddings")

_BY_MODULE.update(dict.fromkeys((*INPUT_EMBEDDINGS, *_POSITION_EMBEDDINGS), "embed"))
_BY_MODULE.update(dict.fromkeys(OUTPUT_HEADS, "lm_head"))

_ATTN_PARENTS = frozenset({"attn", "self_attn", "attention", "self_attention", "mixer"})
_MLP_PARENTS = frozenset({"mlp", "feed_forward", "ffn"})

_NUM_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")


def _split(name: str) -> tuple[list[str], str | None]:
    """Module path components and the trailing parameter name (None when absent)."""
    parts = name.split(".")
    if len(parts) > 1 and parts[-1] in _PARAM_SUFFIXES:
        return parts[:-1], parts[-1]
    return parts, None


def classify_tensor(name: str) -> tuple[int | None, str]:
    """``(layer index or None, module type)`` of a tensor name; see the module docstring.

    >>> classify_tensor("model.layers.3.self_attn.q_proj.weight")
    (3, 'q')
    >>> classify_tensor("transformer.h.0.mlp.c_proj.weight")
    (0, 'mlp_out')
    """
    m = _LAYER_RE.search(name)
    layer = int(m.group(1)) if m else None
    parts, _ = _split(name)
    module = parts[-1].lower() if parts else ""
    parent = parts[-2].lower() if len(parts) > 1 else ""
    return layer, _module_type(module, parent, layer)


def _module_type(module: str, parent: str, layer: int | None) -> str:
    if "norm" in module or module.startswith("ln_") or module in {"ln", "ln_f"}:
        return "norm"
    if module in {"c_proj", "dense", "proj"}:
        # GPT-2 reuses c_proj for the attention output and the MLP output; NeoX uses dense.
        if parent in _ATTN_PARENTS:
            return "o"
        if parent in _MLP_PARENTS:
            return "mlp_out"
        return "other"
    if module == "output" and layer is None and parent == "":
        return "lm_head"  # Meta's original naming: output.weight
    if module in {"gate", "router"}:
        return "other"  # MoE router, not the gated-MLP projection
    return _BY_MODULE.get(module, "other")


def vocab_role(name: str) -> Literal["embed", "head"] | None:
    """``"embed"`` for an input token embedding, ``"head"`` for the output head (see
    :data:`INPUT_EMBEDDINGS`, :data:`OUTPUT_HEADS`), None for anything else.

    >>> vocab_role("gpt_neox.embed_in.weight"), vocab_role("output.weight")
    ('embed', 'head')
    """
    parts, _ = _split(name)
    if not parts or _LAYER_RE.search(name) is not None:
        return None
    if parts == ["output"] or parts[-1] in OUTPUT_HEADS:
        return "head"
    return "embed" if parts[-1] in INPUT_EMBEDDINGS else None


def is_vocab_tensor(name: str) -> bool:
    """Whether dim 0 of ``name`` is the vocabulary (token embeddings, lm_head; mergekit's
    ``vocabulary_axis: 0`` weights).

    Position embeddings (``wpe``) are not vocabulary tensors: their size must match.
    """
    return vocab_role(name) is not None


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders ``layers.2`` before ``layers.10``."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", name) if p)


def _text_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    text = config.get("text_config")
    return text if isinstance(text, Mapping) else config


def config_num_layers(config: Mapping[str, Any]) -> int | None:
    """The layer count a config.json declares (``num_hidden_layers``, ``n_layer``, ...)."""
    for cfg in (config, _text_config(config)):
        for key in _NUM_LAYER_KEYS:
            value = cfg.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
    return None


def config_ties_embeddings(config: Mapping[str, Any]) -> bool:
    """Whether the config ties lm_head to the input embeddings (transformers' default: yes)."""
    for cfg in (config, _text_config(config)):
        if "tie_word_embeddings" in cfg:
            return bool(cfg["tie_word_embeddings"])
    return True
