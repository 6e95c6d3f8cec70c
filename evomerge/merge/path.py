"""LayerPath: a data-flow merge, the path a token takes through the sources' layers.

The data-flow counterpart of :class:`~evomerge.merge.recipe.MergeRecipe` (Sakana AI's
"Evolutionary Optimization of Model Merging Recipes", section 3.2): instead of mixing
weights, a path lists decoder layers of several sources, in the order they are applied.
Its meaning, for tokens ``x`` and the embedding source ``E``::

    h = E.embed_tokens(x)
    for slot in path.slots:              # slot k: (source, layer, scale)
        h = slot.scale * h               # the transition scale (1.0: none)
        h = source.layers[layer](h)      # the whole decoder layer, residual included
    logits = E.lm_head(E.norm(h))

A source is a model (a directory, or ``BASE+ADAPTER`` for a LoRA adapter, as mergekit
writes it) or a :class:`MergeRecipe` merged first: the hybrid of the paper, data-flow
merging over a parameter-space merge. Paths are plain data (``to_dict``/``from_dict``
give JSON) so they travel to workers and into a study's trial attributes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from evomerge._yaml import validate_model
from evomerge.merge.recipe import MergeRecipe

__all__ = ["LayerPath", "PathSlot", "PathSource"]


class PathSource(BaseModel):
    """A model the path takes layers from: ``model`` (a reference) or ``recipe`` (merged
    first, its random methods seeded with ``seed``), exactly one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | None = None
    recipe: MergeRecipe | None = None
    seed: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _one(self) -> PathSource:
        if (self.model is None) == (self.recipe is None):
            raise ValueError(
                "give exactly one of 'model' (a model directory or BASE+ADAPTER) and "
                "'recipe' (a mergekit 'models:' merge computed first)"
            )
        return self

    def describe(self) -> str:
        if self.model is not None:
            return self.model
        assert self.recipe is not None
        return f"{self.recipe.merge_method} merge of {', '.join(self.recipe.model_names())}"

    def to_dict(self) -> dict[str, Any]:
        if self.model is not None:
            return {"model": self.model}
        assert self.recipe is not None
        return {"recipe": self.recipe.to_mergekit_dict(), "seed": self.seed}


class PathSlot(BaseModel):
    """One step of the path: decoder layer ``layer`` of ``source``, its input scaled first."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str
    layer: int = Field(ge=0)
    scale: float = 1.0

    @field_validator("scale")
    @classmethod
    def _positive(cls, v: float) -> float:
        if not (math.isfinite(v) and v > 0):
            raise ValueError(
                f"a transition scale must be a finite positive number, got {v}; "
                "a norm-invariant layer cannot undo a sign flip or a zero"
            )
        return v


class LayerPath(BaseModel):
    """A data-flow merge: ``slots`` through the layers of ``sources``, with the embeddings,
    final norm, head and tokenizer of ``embedding``. Immutable; compare with ``==``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sources: dict[str, PathSource]
    embedding: str
    slots: tuple[PathSlot, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _refs(self) -> LayerPath:
        problems: list[str] = []
        names = ", ".join(self.sources) or "(none)"
        if self.embedding not in self.sources:
            problems.append(f"embedding: {self.embedding!r} is not a source; choose from {names}")
        for k, s in enumerate(self.slots):
            if s.source not in self.sources:
                problems.append(
                    f"slots.{k}.source: {s.source!r} is not a source; choose from {names}"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def __len__(self) -> int:
        return len(self.slots)

    def used_sources(self) -> list[str]:
        """Source names in first-use order: the embedding source, then the slots' sources."""
        out = [self.embedding]
        for s in self.slots:
            if s.source not in out:
                out.append(s.source)
        return out

    def describe(self) -> str:
        """One line: ``a[0] a[1] b[2]*0.80 ...`` (a scale shown where it is not 1)."""
        parts = [
            f"{s.source}[{s.layer}]" + ("" if s.scale == 1.0 else f"*{s.scale:.3g}")
            for s in self.slots
        ]
        return f"embedding {self.embedding}: " + " ".join(parts)

    # -- plain data -----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-able data; :meth:`from_dict` gives back an equal path."""
        return {
            "kind": "layer_path",
            "embedding": self.embedding,
            "sources": {k: v.to_dict() for k, v in self.sources.items()},
            "slots": [[s.source, s.layer, s.scale] for s in self.slots],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<path>") -> LayerPath:
        """Parse :meth:`to_dict`'s output (slots may also be mappings); ConfigError names
        ``source`` and every bad field."""
        raw = dict(data)
        raw.pop("kind", None)
        slots = raw.get("slots")
        if isinstance(slots, list):
            raw["slots"] = [
                {"source": s[0], "layer": s[1], "scale": s[2] if len(s) > 2 else 1.0}
                if isinstance(s, list | tuple) and len(s) in (2, 3)
                else s
                for s in slots
            ]
        return validate_model(cls, raw, source=source)

    @staticmethod
    def is_path_data(data: object) -> bool:
        """Whether ``data`` (a trial's recorded genome decoding) is a path's ``to_dict``."""
        return isinstance(data, Mapping) and data.get("kind") == "layer_path"
