"""The streaming merge: one tensor at a time from disk, for ``evomerge merge`` and export."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from evomerge.merge._models import parse_ref
from evomerge.merge._resolve import MergePlan, plan_merge
from evomerge.merge.methods import Workspace, build_aux
from evomerge.merge.recipe import MergeRecipe

if TYPE_CHECKING:
    from evomerge.pool import ModelPool

logger = logging.getLogger(__name__)

__all__ = ["iter_merged_tensors", "source_keys"]


def source_keys(pool: ModelPool) -> list[str]:
    """The names that key each source's random numbers: the shortest distinct path tails.

    Usually each source's directory name (``ft_a``); where two sources share it
    (``x/ft`` and ``y/ft``), as many parent directories as it takes to tell them apart,
    and a position suffix for the same path listed twice. Independent of where the models
    live and (unless they share paths) of the pool's order, so the engine and the streaming
    merge of the same recipe and seed draw the same noise on any machine, and no two
    sources ever draw the same noise.
    """
    parts = [Path(parse_ref(pool.model_ref(i)).path).parts for i in range(pool.num_sources)]
    deepest = max((len(p) for p in parts), default=1)
    for depth in range(1, deepest + 1):
        keys = ["/".join(p[-depth:]) for p in parts]
        if len(set(keys)) == len(keys):
            return keys
    return [f"{k}#{i}" if keys.count(k) > 1 else k for i, k in enumerate(keys)]


def load_deltas(
    pool: ModelPool,
    name: str,
    sources: Sequence[int],
    base: torch.Tensor,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[len(sources), ...]``: ``source_i - base`` in ``base``'s dtype and device (mergekit's order of casts)."""
    if out is None:
        out = torch.empty((len(sources), *base.shape), dtype=base.dtype, device=base.device)
    for k, i in enumerate(sources):
        src = pool.source_tensor(i, name, dtype=base.dtype, device=base.device)
        torch.sub(src, base, out=out[k])
        del src
    return out


def iter_merged_tensors(
    recipe: MergeRecipe,
    pool: ModelPool,
    *,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = False,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Merge ``recipe`` over ``pool`` tensor by tensor: ``(name, tensor)`` in the pool's order.

    The recipe is validated against the pool before this returns (every problem at once,
    as :class:`~evomerge.exceptions.MergeError`; an unknown method is an
    :class:`~evomerge.exceptions.UnknownMethodError`). Each tensor is computed in the
    recipe's ``dtype`` (default: the base model's dtype) on ``device`` and returned in
    ``out_dtype`` (default: the computation dtype); memory holds one tensor's base, its
    task vectors and the result at a time. ``seed`` fixes the random methods' noise: the
    same recipe and seed give bit-identical tensors here and from :class:`MergeEngine`.
    Non-floating tensors (buffers) are the base's, unchanged.
    """
    plan = plan_merge(recipe, pool)
    keys = source_keys(pool)
    return _generate(plan, pool, torch.device(device), seed, keys, progress)


def _generate(
    plan: MergePlan,
    pool: ModelPool,
    device: torch.device,
    seed: int,
    keys: list[str],
    progress: bool,
) -> Iterator[tuple[str, torch.Tensor]]:
    from tqdm.auto import tqdm

    method = plan.method
    ws = Workspace()
    bar = tqdm(plan.tensors, desc=f"merge ({method.name})", unit="tensor", disable=not progress)
    for tp in bar:
        info = pool.info(tp.name)
        if not info.dtype.is_floating_point:
            yield tp.name, pool.base_tensor(tp.name, dtype=info.dtype, device=device)
            continue
        dtype = plan.dtype or info.dtype
        base = pool.base_tensor(tp.name, dtype=dtype, device=device).contiguous()
        deltas = load_deltas(pool, tp.name, tp.sources, base)
        aux = [
            build_aux(
                method.needs - method.one_off_skips,
                base,
                deltas[k],
                seed=seed,
                tensor_name=tp.name,
                source_key=keys[i],
            )
            for k, i in enumerate(tp.sources)
        ]
        merged = method.fn(
            base, deltas, tp.args, aux=aux, workspace=ws, seed=seed, tensor_name=tp.name
        )
        del base, deltas, aux
        yield tp.name, merged.to(plan.out_dtype or dtype)
