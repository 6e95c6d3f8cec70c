"""A data-flow path as a standard Hugging Face checkpoint and as a mergekit passthrough YAML.

The checkpoint needs no custom code: ``num_hidden_layers`` is the path length and slot
``k`` holds a copy of its source layer's weights. The transition scales fold exactly into
the weights. In a pre-norm decoder every layer reads the residual stream through a norm
(RMSNorm and LayerNorm ignore a positive factor on their input, up to their eps), so
multiplying the stream by ``s`` before slot ``k`` is the same as multiplying everything
written into it before slot ``k``: the embedding and the ``o_proj``/``down_proj`` outputs
of slots ``0..k-1``. An overall factor changes nothing either (the final norm removes it),
so the factors are normalised to leave the embedding alone (tied embeddings stay tied):
slot ``k`` writes with factor ``1 / (s_0 * s_1 * ... * s_k)`` (:func:`fold_factors`).

The mergekit YAML rebuilds the same weights: ``merge_method: passthrough`` with one slice
per run of consecutive layers of one source that share a factor, and a per-slice ``scale``
on ``o_proj`` and ``down_proj``. mergekit takes the embeddings from the first slice's model
and the final norm and head from the last slice's, so zero-length slices of the embedding
source open and close the list where needed. A source that is a recipe (the hybrid)
becomes a named document first: run the file with ``mergekit-multi`` in that case,
``mergekit-yaml`` otherwise.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from evomerge.exceptions import ExportError
from evomerge.merge import (
    FOLD_SUFFIXES,
    SourceWeights,
    check_layers,
    layer_name,
    layer_types,
    open_path_sources,
)
from evomerge.merge.path import LayerPath

logger = logging.getLogger(__name__)

__all__ = [
    "PATH_YAML",
    "fold_factors",
    "iter_path_tensors",
    "path_config",
    "path_to_mergekit_yaml",
    "write_path_checkpoint",
]

PATH_YAML = "mergekit.yaml"
_FOLD_FILTERS = ("o_proj", "down_proj")


def fold_factors(scales: Sequence[float]) -> list[float]:
    """The factor each slot's ``o_proj``/``down_proj`` gets when the scales are folded:
    ``1 / prod(scales[:k+1])``, computed in float64."""
    out: list[float] = []
    acc = 1.0
    for s in scales:
        if not (math.isfinite(s) and s > 0):
            raise ExportError(f"scales: {s} is not a finite positive number")
        acc *= float(s)
        out.append(1.0 / acc)
    return out


def _folded(t: torch.Tensor, factor: float) -> torch.Tensor:
    if factor == 1.0:
        return t
    if t.dtype == torch.float32 or t.dtype == torch.float64:
        return t * factor
    return (t.float() * factor).to(t.dtype)  # half precision: multiply in float32


def iter_path_tensors(
    path: LayerPath, weights: Mapping[str, SourceWeights], *, dtype: torch.dtype | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` of the exported model: the embedding source's tensors outside the
    layer stack, then slot ``k``'s layer as ``model.layers.k``, its ``o_proj``/``down_proj``
    multiplied by its fold factor. ``dtype`` None keeps each tensor's stored dtype."""
    emb = weights[path.embedding]
    for name in emb.non_layer_names():
        yield name, emb.get(name, dtype=dtype)
    factors = fold_factors([s.scale for s in path.slots])
    for k, (slot, factor) in enumerate(zip(path.slots, factors, strict=True)):
        w = weights[slot.source]
        for suffix in w.layer_suffixes(slot.layer):
            t = w.get(layer_name(slot.layer, suffix), dtype=dtype)
            yield layer_name(k, suffix), _folded(t, factor) if suffix in FOLD_SUFFIXES else t


def path_config(path: LayerPath, weights: Mapping[str, SourceWeights]) -> dict[str, Any]:
    """The embedding source's config.json with ``num_hidden_layers`` = path length and,
    for families with per-layer attention types, each slot's type."""
    cfg = dict(weights[path.embedding].config)
    cfg["num_hidden_layers"] = len(path.slots)
    types = {n: layer_types(weights[n].config) for n in path.used_sources()}
    if all(t is not None for t in types.values()):
        cfg["layer_types"] = [types[s.source][s.layer] for s in path.slots]  # type: ignore[index]
    return cfg


def _slices(path: LayerPath) -> list[tuple[str, int, int, float]]:
    """Runs ``(source, first layer, end layer, factor)`` of consecutive layers of one source
    that share a fold factor."""
    runs: list[tuple[str, int, int, float]] = []
    for slot, f in zip(path.slots, fold_factors([s.scale for s in path.slots]), strict=True):
        if runs and runs[-1][0] == slot.source and runs[-1][2] == slot.layer and runs[-1][3] == f:
            src, a, _, _ = runs[-1]
            runs[-1] = (src, a, slot.layer + 1, f)
        else:
            runs.append((slot.source, slot.layer, slot.layer + 1, f))
    return runs


def path_to_mergekit_yaml(
    path: LayerPath, *, num_layers: Mapping[str, int], dtype: str = "float32"
) -> str:
    """The mergekit config that rebuilds :func:`iter_path_tensors`'s weights (see the
    module docstring); ``num_layers`` gives each source's layer count."""
    refs = {n: (s.model if s.model is not None else n) for n, s in path.sources.items()}
    emb = path.embedding
    slices: list[dict[str, Any]] = []
    runs = _slices(path)
    if runs[0][0] != emb:
        slices.append({"sources": [{"model": refs[emb], "layer_range": [0, 0]}]})
    for src, a, b, f in runs:
        entry: dict[str, Any] = {"model": refs[src], "layer_range": [a, b]}
        if f != 1.0:
            conds: list[dict[str, Any]] = [{"filter": x, "value": f} for x in _FOLD_FILTERS]
            entry["parameters"] = {"scale": [*conds, {"value": 1.0}]}
        slices.append({"sources": [entry]})
    if runs[-1][0] != emb:
        end = num_layers[emb]
        slices.append({"sources": [{"model": refs[emb], "layer_range": [end, end]}]})
    final = {
        "slices": slices,
        "merge_method": "passthrough",
        "base_model": refs[emb],
        "dtype": dtype,
    }
    docs: list[dict[str, Any]] = []
    for n in path.used_sources():
        recipe = path.sources[n].recipe
        if recipe is not None:
            docs.append({"name": n, **recipe.to_mergekit_dict()})
    docs.append(final)
    head = (
        "# evomerge data-flow path: "
        + ("mergekit-multi (named documents first)" if len(docs) > 1 else "mergekit-yaml")
        + "\n"
    )
    body = yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=None)
    return head + body


def write_path_checkpoint(
    path: LayerPath,
    out_dir: str | Path,
    *,
    weights: Mapping[str, SourceWeights] | None = None,
    dtype: torch.dtype | None = None,
    allow_pickle: bool = False,
    shard_size: int | str = "5GB",
    extra_files: Mapping[str, str | bytes] | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write ``path`` as a standard checkpoint in ``out_dir`` (atomically), with the
    tokenizer and generation config of the embedding source and ``mergekit.yaml``.

    ``weights`` are the opened sources (default: opened here; a recipe source is merged
    with its ``seed``). ``dtype`` None keeps the stored dtypes. Raises ConfigError when the
    sources' layers do not fit together, ExportError when the output cannot be written.
    """
    from evomerge.export._checkpoint import MERGE_CONFIG_NAME, write_checkpoint

    used = {n: path.sources[n] for n in path.used_sources()}
    if weights is None:
        weights = open_path_sources(used, allow_pickle=allow_pickle)
    check_layers({n: weights[n] for n in used}, path.embedding, field="path.sources")
    counts = {n: weights[n].num_layers for n in used}
    for k, s in enumerate(path.slots):
        if s.layer >= counts[s.source]:
            raise ExportError(
                f"slots.{k}: source {s.source!r} has {counts[s.source]} layers, no layer {s.layer}"
            )
    yaml_text = path_to_mergekit_yaml(
        path, num_layers=counts, dtype=_dtype_name(dtype, weights, path)
    )
    extras = {PATH_YAML: yaml_text, **dict(extra_files or {})}
    logger.info("exporting a %d-slot path (%s) to %s", len(path.slots), path.describe(), out_dir)
    return write_checkpoint(
        iter_path_tensors(path, weights, dtype=dtype),
        out_dir,
        config=path_config(path, weights),
        base_dir=weights[path.embedding].base_dir,
        shard_size=shard_size,
        merge_config_yaml=yaml_text if MERGE_CONFIG_NAME not in extras else None,
        extra_files=extras,
        overwrite=overwrite,
        progress=progress,
    )


def _dtype_name(
    dtype: torch.dtype | None, weights: Mapping[str, SourceWeights], path: LayerPath
) -> str:
    if dtype is None:
        emb = weights[path.embedding]
        smallest = min(emb.non_layer_names(), key=lambda n: math.prod(emb.shape(n)))
        dtype = emb.get(smallest).dtype
    return str(dtype).removeprefix("torch.")
