"""Architecture checks across a pool: same tensor names and shapes, vocab rows cropped.

Vocabulary tensors (token embeddings, lm_head: dim 0 is the vocabulary) whose other
dims agree are cropped to the smallest row count among all models, base included. This is
what mergekit 0.1.5 does with ``--unsafe-truncate-embeddings`` when no tokenizer source is
given (``merge_methods/preprocessing.truncate_vocabulary``: ``narrow(axis, 0, min rows)``
over every input of the tensor); without that option mergekit refuses to merge. Any other
difference is an :class:`~evomerge.exceptions.ArchitectureMismatchError`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from evomerge.exceptions import ArchitectureMismatchError, CheckpointError
from evomerge.pool._naming import classify_tensor, config_num_layers, is_vocab_tensor

logger = logging.getLogger(__name__)

__all__ = ["ModelShapes", "TensorInfo", "VocabCrop", "check_architecture", "count_layers"]


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the pool: its shape (after any vocab crop), base dtype, layer, module."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    layer: int | None
    module: str

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class VocabCrop:
    """A vocabulary tensor whose rows differ between models, cropped to ``cropped_to``.

    ``models`` are the model labels (base first, then the sources, in pool order) and
    ``sizes`` their row counts.
    """

    tensor: str
    models: tuple[str, ...]
    sizes: tuple[int, ...]
    cropped_to: int

    def __str__(self) -> str:
        sizes = ", ".join(f"{m}={s}" for m, s in zip(self.models, self.sizes, strict=True))
        return f"{self.tensor}: rows {sizes} -> cropped to {self.cropped_to}"


@dataclass(frozen=True)
class ModelShapes:
    """What the check needs to know about one model."""

    label: str
    path: Path
    shapes: Mapping[str, tuple[int, ...]]
    ties_embeddings: bool


def _who(m: ModelShapes) -> str:
    return f"{m.label!r} ({m.path})"


def check_architecture(models: Sequence[ModelShapes], order: Sequence[str]) -> list[VocabCrop]:
    """Check that ``models[1:]`` match ``models[0]`` (the base); returns the vocab crops.

    ``order`` is the base's tensor order: the first differing tensor in it is reported.

    Raises:
        ArchitectureMismatchError: a missing/extra tensor, or a shape that differs outside
            a vocabulary tensor's dim 0.
    """
    base = models[0]
    for m in models[1:]:
        _check_names(base, m)
    crops: list[VocabCrop] = []
    for name in order:
        shapes = [m.shapes[name] for m in models]
        if all(s == shapes[0] for s in shapes):
            continue
        same_rank = all(len(s) == len(shapes[0]) and len(s) >= 1 for s in shapes)
        if is_vocab_tensor(name) and same_rank and all(s[1:] == shapes[0][1:] for s in shapes):
            crop = VocabCrop(
                tensor=name,
                models=tuple(m.label for m in models),
                sizes=tuple(s[0] for s in shapes),
                cropped_to=min(s[0] for s in shapes),
            )
            logger.warning("vocabulary sizes differ; %s (token ids are assumed to agree)", crop)
            crops.append(crop)
            continue
        j = next(i for i, s in enumerate(shapes) if s != shapes[0])
        raise ArchitectureMismatchError(
            f"tensor {name!r} has shape {shapes[0]} in base {_who(base)} but {shapes[j]} in "
            f"{_who(models[j])}; all models must share one architecture"
        )
    return crops


def _check_names(base: ModelShapes, m: ModelShapes) -> None:
    missing = [n for n in base.shapes if n not in m.shapes]
    extra = [n for n in m.shapes if n not in base.shapes]
    if not missing and not extra:
        return
    if missing:
        what = f"{_who(m)} lacks tensor {missing[0]!r} that base {_who(base)} has"
        more = len(missing) - 1
    else:
        what = f"{_who(m)} has tensor {extra[0]!r} that base {_who(base)} lacks"
        more = len(extra) - 1
    if more > 0:
        what += f" (and {more} more)"
    if all(is_vocab_tensor(n) for n in missing + extra) and (
        base.ties_embeddings or m.ties_embeddings
    ):
        what += (
            "; one model ties lm_head to the input embeddings and the other does not, "
            "which cannot be merged tensor by tensor"
        )
    raise ArchitectureMismatchError(what)


def count_layers(names: Sequence[str], config: Mapping[str, object], *, where: Path) -> int:
    """Layer count from config.json, cross-checked with the layer indices in ``names``.

    Raises:
        CheckpointError: the config and the tensor names disagree.
    """
    layers = {layer for layer in (classify_tensor(n)[0] for n in names) if layer is not None}
    declared = config_num_layers(config)
    found = max(layers) + 1 if layers else 0
    if declared is not None and layers and declared != found:
        raise CheckpointError(
            f"{where}: config.json declares {declared} layers but the tensors cover layers "
            f"0..{found - 1}; the config does not belong to these weights"
        )
    if layers and len(layers) != found:
        gaps = sorted(set(range(found)) - layers)
        logger.warning("%s: no tensors for layer(s) %s", where, gaps)
    return declared if declared is not None else found
