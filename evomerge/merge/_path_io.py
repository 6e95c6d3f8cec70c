"""The weights of a path's sources, and the checks that let their layers share one stream.

:func:`open_path_sources` opens each :class:`~evomerge.merge.path.PathSource`: a model
directory (read lazily from safetensors), ``BASE+ADAPTER`` (a LoRA adapter applied to its
base) or a recipe (merged once, in memory, with the streaming merge). Layers of different
sources can follow one another only when they read and write the same residual stream:
:func:`layer_problems` compares the hidden size, the attention head layout and the MLP
(every layer tensor's name and shape), naming the first difference.

Supported families: decoders whose layers live at ``model.layers.N`` and write the residual
stream through ``self_attn.o_proj`` and ``mlp.down_proj`` after a pre-norm (Llama, Mistral,
Qwen2, Qwen3): the transition scales fold exactly into those projections on export.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from evomerge.exceptions import ConfigError
from evomerge.merge.path import PathSource

logger = logging.getLogger(__name__)

__all__ = [
    "FOLD_SUFFIXES",
    "LAYER_PREFIX",
    "SUPPORTED_PATH_MODEL_TYPES",
    "SourceWeights",
    "check_layers",
    "hf_config",
    "layer_name",
    "layer_problems",
    "layer_types",
    "open_path_source",
    "open_path_sources",
    "split_layer_name",
]

LAYER_PREFIX = "model.layers."
SUPPORTED_PATH_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
#: The tensors that write into the residual stream (a transition scale folds into them).
FOLD_SUFFIXES = (
    "self_attn.o_proj.weight",
    "self_attn.o_proj.bias",
    "mlp.down_proj.weight",
    "mlp.down_proj.bias",
)
_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
# config.json fields that must agree between sources (shapes and the layer's function)
_LAYOUT_KEYS = (
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "attention_bias",
    "mlp_bias",
)
# fields that change a layer's numbers a little; the embedding source's value is used
_SOFT_KEYS = ("rms_norm_eps", "rope_theta", "rope_scaling", "rope_parameters", "sliding_window")


def hf_config(config: Mapping[str, Any]) -> Any:
    """A transformers config object from config.json data (no remote code)."""
    from transformers import AutoConfig

    data = dict(config)
    model_type = data.pop("model_type")
    return AutoConfig.for_model(model_type, **data)


def layer_types(config: Mapping[str, Any]) -> list[str] | None:
    """Each layer's attention type (``full_attention``, ``sliding_attention``) for families
    whose config has ``layer_types`` (derived from the config's other fields when absent);
    None for the others."""
    types = getattr(hf_config(config), "layer_types", None)
    return list(types) if types else None


def split_layer_name(name: str) -> tuple[int, str] | None:
    """``"model.layers.3.mlp.down_proj.weight"`` -> ``(3, "mlp.down_proj.weight")``; None
    outside the layer stack."""
    m = _LAYER_RE.match(name)
    return (int(m.group(1)), m.group(2)) if m else None


def layer_name(layer: int, suffix: str) -> str:
    return f"{LAYER_PREFIX}{layer}.{suffix}"


@dataclass
class SourceWeights:
    """One source's tensors by HF name, read on demand (a recipe's: merged, in memory).

    ``base_dir`` holds the tokenizer and generation config that go with these weights.
    """

    name: str
    config: dict[str, Any]
    base_dir: Path
    tensor_names: list[str]
    _get: Any = field(repr=False)
    _shape: Any = field(repr=False)

    @property
    def num_layers(self) -> int:
        layers = [p[0] for n in self.tensor_names if (p := split_layer_name(n)) is not None]
        return max(layers) + 1 if layers else 0

    def get(
        self, name: str, *, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
    ) -> torch.Tensor:
        t: torch.Tensor = self._get(name)
        return t.to(device=device, dtype=dtype if dtype is not None else t.dtype)

    def shape(self, name: str) -> tuple[int, ...]:
        """The shape of tensor ``name`` (from file headers where possible: no data read)."""
        return tuple(self._shape(name))

    def layer_suffixes(self, layer: int) -> list[str]:
        """The names of layer ``layer``'s tensors without the ``model.layers.N.`` prefix."""
        return [p[1] for n in self.tensor_names if (p := split_layer_name(n)) and p[0] == layer]

    def non_layer_names(self) -> list[str]:
        return [n for n in self.tensor_names if split_layer_name(n) is None]

    def layer_state(
        self, layer: int, *, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
    ) -> dict[str, torch.Tensor]:
        """Layer ``layer``'s tensors keyed as the decoder layer module's ``state_dict``."""
        return {
            s: self.get(layer_name(layer, s), dtype=dtype, device=device)
            for s in self.layer_suffixes(layer)
        }


def open_path_source(name: str, source: PathSource, *, allow_pickle: bool = False) -> SourceWeights:
    """Open one source (file headers only). A recipe source is merged on the first
    :meth:`SourceWeights.get`, whole, on CPU, with the source's ``seed``.

    Raises CheckpointError/UnsafeCheckpointError/MergeError from opening or merging.
    """
    from evomerge.merge._models import parse_ref, pool_for_recipe
    from evomerge.merge._stream import iter_merged_tensors
    from evomerge.pool import Checkpoint, ModelPool

    if source.recipe is not None:
        recipe = source.recipe
        pool = pool_for_recipe(recipe, allow_pickle=allow_pickle)
        merged: dict[str, torch.Tensor] = {}

        def get_merged(n: str) -> torch.Tensor:
            if not merged:
                merged.update(iter_merged_tensors(recipe, pool, device="cpu", seed=source.seed))
                logger.info("path source %s: merged %s in memory", name, source.describe())
            return merged[n]

        return SourceWeights(
            name=name,
            config=dict(pool.config),
            base_dir=pool.base_path,
            tensor_names=list(pool.tensor_names),
            _get=get_merged,
            _shape=lambda n: pool.info(n).shape,
        )
    assert source.model is not None
    ref = parse_ref(source.model)
    if ref.lora is not None:
        lora_pool = ModelPool.open(ref.model, [ref.lora], allow_pickle=allow_pickle)
        return SourceWeights(
            name=name,
            config=dict(lora_pool.config),
            base_dir=lora_pool.base_path,
            tensor_names=list(lora_pool.tensor_names),
            _get=lambda n: lora_pool.source_tensor(0, n, dtype=lora_pool.info(n).dtype),
            _shape=lambda n: lora_pool.info(n).shape,
        )
    ck = Checkpoint.open(ref.model, allow_pickle=allow_pickle)
    return SourceWeights(
        name=name,
        config=dict(ck.config),
        base_dir=ck.path,
        tensor_names=list(ck.names),
        _get=ck.get,
        _shape=ck.shape,
    )


def open_path_sources(
    sources: Mapping[str, PathSource], *, allow_pickle: bool = False
) -> dict[str, SourceWeights]:
    """:func:`open_path_source` for each ``name: source``."""
    return {n: open_path_source(n, s, allow_pickle=allow_pickle) for n, s in sources.items()}


def _layout(config: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: config.get(k) for k in _LAYOUT_KEYS}
    heads, hidden = out["num_attention_heads"], out["hidden_size"]
    if out["num_key_value_heads"] is None:
        out["num_key_value_heads"] = heads
    if out["head_dim"] is None and isinstance(heads, int) and isinstance(hidden, int) and heads:
        out["head_dim"] = hidden // heads
    out["attention_bias"] = bool(out["attention_bias"])
    out["mlp_bias"] = bool(out["mlp_bias"])
    return out


def _layer_shapes(w: SourceWeights, layer: int) -> dict[str, tuple[int, ...]]:
    return {s: w.shape(layer_name(layer, s)) for s in w.layer_suffixes(layer)}


def layer_problems(weights: Mapping[str, SourceWeights], embedding: str) -> list[str]:
    """Why the sources' layers cannot share one residual stream (empty: they can).

    Compares each source with ``embedding``: the supported model family, the config
    layout (hidden size, heads, head size, MLP width, activation, biases) and every
    layer's tensor names and shapes. Also warns (logs) about fields where the embedding
    source's value will be used for every layer (norm eps, rotary settings).
    """
    ref = weights[embedding]
    problems: list[str] = []
    for name, w in weights.items():
        mt = w.config.get("model_type")
        if mt not in SUPPORTED_PATH_MODEL_TYPES:
            problems.append(
                f"{name!r} ({w.base_dir}) has model_type {mt!r}; data-flow merging supports "
                f"{', '.join(SUPPORTED_PATH_MODEL_TYPES)} (pre-norm decoders at model.layers.N)"
            )
            continue
        if w.num_layers == 0:
            problems.append(f"{name!r} ({w.base_dir}) has no model.layers.N tensors")
            continue
        if name == embedding:
            continue
        mine, theirs = _layout(w.config), _layout(ref.config)
        diff = [k for k in _LAYOUT_KEYS if mine[k] != theirs[k]]
        if diff:
            k = diff[0]
            problems.append(
                f"{name!r} has {k}={mine[k]!r} but the embedding source {embedding!r} has "
                f"{theirs[k]!r}; every source needs the same hidden size and head layout"
            )
            continue
        soft = [k for k in _SOFT_KEYS if w.config.get(k) != ref.config.get(k)]
        if soft:
            logger.warning(
                "source %r differs from %r in %s; its layers run with %r's values",
                name,
                embedding,
                ", ".join(soft),
                embedding,
            )
    if problems:
        return problems
    want = _layer_shapes(ref, 0)
    for name, w in weights.items():
        for layer in range(w.num_layers):
            have = _layer_shapes(w, layer)
            if have != want:
                odd = sorted(set(have.items()) ^ set(want.items()))[0][0]
                problems.append(
                    f"{name!r} layer {layer} differs from {embedding!r} layer 0 at {odd!r} "
                    f"({have.get(odd)} vs {want.get(odd)}); layers must have the same tensors"
                )
                break
    return problems


def check_layers(weights: Mapping[str, SourceWeights], embedding: str, *, field: str) -> None:
    """Raise ConfigError naming ``field`` when :func:`layer_problems` finds any."""
    problems = layer_problems(weights, embedding)
    if problems:
        raise ConfigError(f"{field}: " + "; ".join(problems))
