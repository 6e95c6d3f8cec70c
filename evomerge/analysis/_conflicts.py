"""The streaming analysis: task vectors in, one float64 statistics row per tensor out.

Memory: for each tensor, the float32 task vectors of all T models for that one tensor are
held, plus while trimming one copy, its magnitudes and a mask, plus per-chunk temporaries
of 2**20 coordinates; nothing else grows with the model. Measured on a 32000 x 4096
tensor (0.49 GiB in float32, a 7B Llama's embedding) and T = 2: peak 1.1 GiB above the
baseline without trimming, 2.1 GiB with tensor- or global-scope trimming; so a 7B pair
fits in a few GiB besides what the providers hold (the pool reads tensors on demand).
Global trimming reads every task vector twice more (two histogram passes) before the
analysis pass; tensor-scope trimming and no trimming read each once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import combinations
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from evomerge.analysis._report import ConflictReport, TensorRow
from evomerge.analysis._stats import StatLayout, raw_stats, tensor_stats
from evomerge.analysis._trim import (
    Threshold,
    ThresholdFinder,
    TieBudget,
    apply_trim,
    tensor_threshold,
)
from evomerge.exceptions import ArchitectureMismatchError, CheckpointError, ConfigError

if TYPE_CHECKING:
    from evomerge.pool import ModelPool

__all__ = [
    "TRIM_SCOPES",
    "TaskVectorFn",
    "TensorInfoLike",
    "analyze_candidates",
    "analyze_conflicts",
    "analyze_pool",
]

logger = logging.getLogger(__name__)

TRIM_SCOPES = ("tensor", "global")

#: A task-vector provider: tensor name -> tau for that tensor (any float dtype, any device).
TaskVectorFn = Callable[[str], torch.Tensor]


class TensorInfoLike(Protocol):
    """What the analysis needs to know of a tensor (``evomerge.pool.TensorInfo`` fits)."""

    @property
    def layer(self) -> int | None: ...

    @property
    def module(self) -> str: ...


def check_args(density: float | None, trim_scope: str) -> None:
    """Raise ConfigError naming ``density`` or ``trim_scope`` when either is invalid."""
    if trim_scope not in TRIM_SCOPES:
        raise ConfigError(
            f"trim_scope: unknown trim scope {trim_scope!r}. Available: {', '.join(TRIM_SCOPES)}"
        )
    if density is not None and not (0.0 < density <= 1.0):
        raise ConfigError(
            f"density: must be in (0, 1], got {density!r}; leave it unset for no trimming"
        )


def _load(fn: TaskVectorFn, tensor: str, *, copy: bool) -> torch.Tensor:
    return fn(tensor).to(torch.float32, copy=copy).contiguous()


def _bar(items: Iterable[str], progress: bool, desc: str, total: int) -> Iterable[str]:
    return tqdm(items, desc=desc, total=total, disable=not progress, unit="tensor")


def _global_thresholds(
    tensor_names: Sequence[str],
    task_vectors: Mapping[str, TaskVectorFn],
    density: float,
    progress: bool,
) -> dict[str, Threshold | None]:
    finders = {v: ThresholdFinder(density=density) for v in task_vectors}
    for t in _bar(tensor_names, progress, "conflicts: |tau| histogram 1/2", len(tensor_names)):
        for v, fn in task_vectors.items():
            finders[v].add_high(_load(fn, t, copy=False).abs())
    todo = [v for v, f in finders.items() if f.needs_second_pass()]
    if todo:
        for t in _bar(tensor_names, progress, "conflicts: |tau| histogram 2/2", len(tensor_names)):
            for v in todo:
                finders[v].add_low(_load(task_vectors[v], t, copy=False).abs())
    return {v: f.result() for v, f in finders.items()}


def analyze_conflicts(
    tensor_names: Sequence[str],
    infos: Mapping[str, TensorInfoLike],
    task_vectors: Mapping[str, TaskVectorFn],
    *,
    pairs: Sequence[tuple[str, str]] | None = None,
    joint: bool = True,
    density: float | None = None,
    trim_scope: str = "tensor",
    progress: bool = False,
) -> ConflictReport:
    """Conflict statistics of the named task vectors, streamed one tensor at a time.

    ``task_vectors`` maps a vector's name to a provider (called once per tensor and pass,
    in ``tensor_names`` order; a returned tensor is never modified). ``joint`` computes the
    multi-way figures over all vectors; ``pairs`` (default: every pair) the pairwise ones.
    ``density`` trims each vector TIES-style per ``trim_scope`` before every figure except
    ``l2_untrimmed`` and ``unchanged_fraction``. Raises ConfigError on bad arguments,
    ArchitectureMismatchError when the vectors' shapes differ, CheckpointError on NaN/inf.
    Holds no global state: concurrent calls on different inputs are safe.
    """
    check_args(density, trim_scope)
    names = list(task_vectors)
    if not names:
        raise ConfigError("task_vectors: no task vectors given; pass at least one model")
    pair_list = list(combinations(names, 2)) if pairs is None else [(a, b) for a, b in pairs]
    for a, b in pair_list:
        if a not in task_vectors or b not in task_vectors or a == b:
            raise ConfigError(
                f"pairs: bad pair ({a!r}, {b!r}); both must be distinct names among {names}"
            )
    layout = StatLayout(names, joint=joint, pairs=pair_list)
    trim = density if density is not None and density < 1.0 else None  # None: no trimming
    thresholds: dict[str, Threshold | None] = {}
    if trim is not None and trim_scope == "global":
        thresholds = _global_thresholds(tensor_names, task_vectors, trim, progress)
        logger.info(
            "global trim thresholds on |tau|: %s", {v: t and t.value for v, t in thresholds.items()}
        )
    budgets = {v: TieBudget(t) if t is not None else None for v, t in thresholds.items()}

    rows: list[TensorRow] = []
    sums = []
    for tname in _bar(tensor_names, progress, "conflicts", len(tensor_names)):
        out = layout.zeros()
        taus: list[torch.Tensor] = []
        for v in names:
            tau = _load(task_vectors[v], tname, copy=trim is not None)
            if taus and tau.shape != taus[0].shape:
                raise ArchitectureMismatchError(
                    f"tensor {tname!r}: task vector of {v!r} has shape {tuple(tau.shape)}, "
                    f"{names[0]!r} has {tuple(taus[0].shape)}; models must share the base's architecture"
                )
            if not math.isfinite(
                raw_stats(layout, out, v, tau)
            ):  # NaN/inf anywhere makes ||tau||^2 non-finite
                raise CheckpointError(
                    f"task vector of {v!r} for tensor {tname!r} has NaN or infinite values; check that checkpoint"
                )
            if trim is not None and trim_scope == "tensor":
                absx = tau.abs()
                thr = tensor_threshold(absx, trim)
                apply_trim(tau, TieBudget(thr) if thr is not None else None, absx)
                del absx
            elif trim is not None:
                apply_trim(tau, budgets[v])
            taus.append(tau)
        tensor_stats(layout, out, taus)
        del taus
        info = infos[tname]
        rows.append(TensorRow(name=tname, layer=info.layer, module=info.module, numel=int(out[0])))
        sums.append(out)
    matrix = np.stack(sums) if sums else np.zeros((0, len(layout)))
    return ConflictReport(
        kind="models" if joint else "candidates",
        layout=layout,
        tensors=rows,
        sums=matrix,
        density=density,
        trim_scope=trim_scope,
        thresholds={v: (t.value if t is not None else None) for v, t in thresholds.items()},
    )


def _pool_vectors(pool: ModelPool) -> dict[str, TaskVectorFn]:
    def provider(i: int) -> TaskVectorFn:
        return lambda name: pool.task_vector(i, name)

    return {src: provider(i) for i, src in enumerate(pool.source_names)}


def analyze_pool(
    pool: ModelPool,
    *,
    density: float | None = None,
    trim_scope: str = "tensor",
    progress: bool = False,
) -> ConflictReport:
    """Joint and pairwise conflict figures of every source of a ``ModelPool`` against its base."""
    names = list(pool.tensor_names)
    return analyze_conflicts(
        names,
        {n: pool.info(n) for n in names},
        _pool_vectors(pool),
        density=density,
        trim_scope=trim_scope,
        progress=progress,
    )


def analyze_candidates(
    pool: ModelPool,
    merged: Mapping[str, TaskVectorFn],
    *,
    density: float | None = None,
    trim_scope: str = "tensor",
    progress: bool = False,
) -> ConflictReport:
    """Each candidate's effective task vector (merged - base) against each source's.

    ``merged`` maps a candidate's name to a function giving its merged *weights* for a
    tensor name. Computes, per tensor and aggregated: for every vector (sources and
    candidates) ``l2``, ``l2_untrimmed``, ``unchanged_fraction``, ``nonzero_fraction``; for
    every pair ``candidate|source`` the two-vector figures ``cosine``, ``abs_cosine``,
    ``conflict_fraction_active``/``_all`` and, per member, ``cl2``, ``cl2_ratio``,
    ``ties_discarded_l2``/``_ratio``. No joint figures and no source-source pairs.
    """
    sources = list(pool.source_names)
    clash = sorted(set(merged) & set(sources))
    if clash:
        raise ConfigError(
            f"merged: candidate names {clash} clash with source names; rename the candidates"
        )

    def candidate(fn: TaskVectorFn) -> TaskVectorFn:
        def tau(name: str) -> torch.Tensor:
            base = pool.base_tensor(name)
            return fn(name).to(base.device, torch.float32) - base.to(torch.float32)

        return tau

    vectors = _pool_vectors(pool)
    vectors.update({c: candidate(fn) for c, fn in merged.items()})
    names = list(pool.tensor_names)
    return analyze_conflicts(
        names,
        {n: pool.info(n) for n in names},
        vectors,
        pairs=[(c, s) for c in merged for s in sources],
        joint=False,
        density=density,
        trim_scope=trim_scope,
        progress=progress,
    )
