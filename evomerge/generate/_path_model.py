"""A data-flow path in memory: one transformers model whose decoder stack is re-wired per trial.

::

    pm = PathModel.build(open_path_sources(path.sources), embedding="a", device="cpu")
    pm.set_path(path)                      # no weights copied: the slots share layer modules
    HFGenerator(model=pm.model, tokenizer=tok).generate(prompts, params)

Built once per worker: every source's decoder layers become modules, resident on the
device (a bank: sources x layers), and a host model of the embedding source holds the
embeddings, final norm, rotary embedding and head. :meth:`PathModel.set_path` replaces the
host's ``model.layers`` by one light slot per step of the path; a slot points at a bank
layer (a layer that repeats is the same module at several slots, its weights held once),
scales the hidden state by the slot's scale, and gives the layer the slot's own index, so
each slot has its own KV-cache entry. The host's config says ``num_hidden_layers`` = path
length (and per-slot ``layer_types`` where the family has them), which is what
transformers' caches and masks read.

The result is, up to float rounding, the model :func:`evomerge.export.write_path_checkpoint`
writes: the same layers copied into a standard checkpoint (scales folded into weights).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from evomerge.exceptions import GenerationError
from evomerge.merge import SourceWeights, hf_config, layer_types
from evomerge.merge.path import LayerPath

logger = logging.getLogger(__name__)

__all__ = ["PathModel"]


class _Slot(nn.Module):
    """Step ``index`` of a path: scale the hidden state, then run a shared decoder layer as
    layer ``index`` (its KV-cache entry and mask)."""

    def __init__(self, layer: nn.Module, *, index: int, scale: float) -> None:
        super().__init__()
        self.layer = layer
        self.index = index
        self.scale = float(scale)
        # modules that address the cache by their layer index (the attention)
        self._indexed = [m for m in layer.modules() if hasattr(m, "layer_idx")]

    @property
    def attention_type(self) -> Any:  # read by some transformers versions to pick a mask
        return getattr(self.layer, "attention_type", None)

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        for m in self._indexed:
            setattr(m, "layer_idx", self.index)  # noqa: B010 (a module attribute)
        if self.scale != 1.0:
            hidden_states = hidden_states * self.scale
        return self.layer(hidden_states, *args, **kwargs)


def _no_meta(module: nn.Module, what: str) -> None:
    left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:
        raise GenerationError(
            f"{what}: tensors {left[:5]} were not loaded (the checkpoint lacks them); "
            "is it a complete model of a supported family?"
        )


class PathModel:
    """The embedding source's model with a re-wirable decoder stack; see the module docstring.

    Not thread-safe (one worker, one trial at a time). ``model`` is the live transformers
    model, the same object for the whole run.
    """

    def __init__(
        self,
        *,
        model: Any,
        bank: dict[str, list[nn.Module]],
        layer_types: dict[str, list[str]] | None,
        embedding: str,
    ) -> None:
        self.model = model
        self.bank = bank
        self.embedding = embedding
        self._layer_types = layer_types
        self.path: LayerPath | None = None

    @classmethod
    def build(
        cls,
        sources: Mapping[str, SourceWeights],
        *,
        embedding: str,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        attn_implementation: str | None = None,
    ) -> PathModel:
        """Load every source's layers and the embedding source's embeddings and head.

        ``sources`` must pass :func:`evomerge.merge.layer_problems`. Raises
        GenerationError when a model cannot be assembled.
        """
        from transformers import AutoModelForCausalLM

        if embedding not in sources:
            raise GenerationError(f"embedding: {embedding!r} is not among {list(sources)}")
        emb = sources[embedding]
        cfg = hf_config(emb.config)
        kwargs: dict[str, Any] = {"dtype": dtype}
        if attn_implementation is not None:
            kwargs["attn_implementation"] = attn_implementation
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(cfg, **kwargs)
        decoder = model.model
        layer_cls = type(decoder.layers[0])
        decoder.layers = nn.ModuleList()
        state = {n: emb.get(n, dtype=dtype, device=device) for n in emb.non_layer_names()}
        result = model.load_state_dict(state, strict=False, assign=True)
        if result.unexpected_keys:
            raise GenerationError(
                f"embedding source {embedding!r}: unexpected tensors {result.unexpected_keys[:5]}"
            )
        if getattr(model.config, "tie_word_embeddings", False) and "lm_head.weight" not in state:
            model.lm_head.weight = decoder.embed_tokens.weight
        decoder.rotary_emb = type(decoder.rotary_emb)(model.config).to(
            device
        )  # buffers are not weights
        _no_meta(model, f"embedding source {embedding!r}")

        bank: dict[str, list[nn.Module]] = {}
        types: dict[str, list[str]] = {}
        for name, w in sources.items():
            n_layers = w.num_layers
            lcfg = copy.deepcopy(model.config)
            lcfg.num_hidden_layers = n_layers
            own_types = layer_types(w.config) if hasattr(cfg, "layer_types") else None
            if own_types is not None:
                types[name] = own_types[:n_layers]
                lcfg.layer_types = types[name]
            layers: list[nn.Module] = []
            for i in range(n_layers):
                with torch.device("meta"):
                    layer = layer_cls(lcfg, i)
                layer.load_state_dict(w.layer_state(i, dtype=dtype, device=device), assign=True)
                _no_meta(layer, f"source {name!r} layer {i}")
                layer.eval().requires_grad_(False)
                layers.append(layer)
            bank[name] = layers
        model.eval().requires_grad_(False)
        logger.info(
            "path model: %s layers from %d source(s), embeddings of %s, on %s in %s",
            sum(len(v) for v in bank.values()),
            len(bank),
            embedding,
            device,
            dtype,
        )
        return cls(model=model, bank=bank, layer_types=types or None, embedding=embedding)

    def set_path(self, path: LayerPath) -> None:
        """Re-wire the decoder stack to ``path`` (no weight is copied).

        Raises GenerationError when the path uses another embedding source, an unknown
        source or a layer the source lacks.
        """
        if path.embedding != self.embedding:
            raise GenerationError(
                f"path uses the embeddings of {path.embedding!r}, this model holds {self.embedding!r}'s"
            )
        slots: list[nn.Module] = []
        for k, s in enumerate(path.slots):
            layers = self.bank.get(s.source)
            if layers is None or not 0 <= s.layer < len(layers):
                have = {n: len(v) for n, v in self.bank.items()}
                raise GenerationError(
                    f"slot {k}: no layer {s.layer} in source {s.source!r} (layers held: {have})"
                )
            slots.append(_Slot(layers[s.layer], index=k, scale=s.scale))
        self.model.model.layers = nn.ModuleList(slots)
        self.model.config.num_hidden_layers = len(slots)
        if self._layer_types is not None:
            self.model.config.layer_types = [
                self._layer_types[s.source][s.layer] for s in path.slots
            ]
        self.path = path
