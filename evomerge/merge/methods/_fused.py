"""A fused single-pass kernel for TIES-style sign consensus (ties, dare_ties), via torch.compile.

The eager path (:func:`._task_arithmetic._consensus_chunk`) makes about a dozen passes over
each cached chunk; compiled, the whole merge of one tensor is one loop that reads the base,
each task vector (and DARE's noise) once and writes the output once, which is what plain
task arithmetic costs. Per element, with ``keep_i`` from the source's :class:`Keep`:

    x_i = coef_i * d_i if keep_i else 0          S = sum_i x_i,  M = +1 if S >= 0 else -1
    agree_i = x_i * M > 0                         num = sum_i agree_i * x_i
    den = sum_i agree_i * weight_i (0 -> 1)       out = base + lam * num / den  (num if not normalize)

exactly the eager path's arithmetic (mergekit's semantics). Keeps handled: ``all``,
``none``, ``mag`` without an upper cut (ties' top-k, ties at the cut resolved by flat
position like a stable sort) and ``noise`` (DARE). Anything else returns False and the
caller uses the eager path. torch.compile needs a C++ compiler on CPU; if compiling fails
once, the kernel is disabled for the process (logged) and the eager path is used.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence

import torch

from evomerge.merge.methods._aux import SourceAux
from evomerge.merge.methods._sparsify import Keep

logger = logging.getLogger(__name__)

__all__ = ["fused_consensus", "fused_enabled"]

_LOCK = threading.Lock()
_KERNELS: dict[str, Callable[..., None]] = {}
_DISABLED: list[str] = []  # the reason, once compiling failed


def fused_enabled() -> bool:
    """False when ``EVOMERGE_FUSED=0`` or compiling failed earlier in this process."""
    return os.environ.get("EVOMERGE_FUSED", "1") != "0" and not _DISABLED


def _consensus(
    out: torch.Tensor,
    base: torch.Tensor,
    xs: list[torch.Tensor],
    weight: torch.Tensor,
    lam: torch.Tensor,
    normalize: bool,
) -> None:
    """Sign election and disjoint (weighted) mean of the kept, weighted task vectors ``xs``."""
    total = xs[0]
    for x in xs[1:]:
        total = total + x
    sign = torch.where(total >= 0, 1.0, -1.0)
    num = torch.zeros_like(total)
    den = torch.zeros_like(total)
    for i, x in enumerate(xs):
        agree = x * sign > 0
        num = num + torch.where(agree, x, 0.0)
        den = den + torch.where(agree, weight[i], 0.0)
    if normalize:
        num = num / torch.where(den == 0, 1.0, den)
    out.copy_(base.to(torch.float32) + lam * num)


# Per-source scalars come in as tensors ([N] each), so new weights never recompile; the
# result is written into ``out`` inside the compiled graph (no temporary, no extra copy).
def _merge_magnitude(
    out: torch.Tensor,
    base: torch.Tensor,
    rows: list[torch.Tensor],
    coef: torch.Tensor,
    weight: torch.Tensor,
    below: torch.Tensor,
    cut: torch.Tensor,
    lam: torch.Tensor,
    normalize: bool,
) -> None:
    """Top-k trimming: keep |d| > below, or |d| == below at flat position <= cut (stable order)."""
    pos = torch.arange(base.numel(), device=base.device)
    xs = []
    for i, row in enumerate(rows):
        d = row.to(torch.float32)
        mag = d.abs()
        keep = (mag > below[i]) | ((mag == below[i]) & (pos <= cut[i]))
        xs.append(torch.where(keep, d * coef[i], 0.0))
    _consensus(out, base, xs, weight, lam, normalize)


def _merge_noise(
    out: torch.Tensor,
    base: torch.Tensor,
    rows: list[torch.Tensor],
    noises: list[torch.Tensor],
    coef: torch.Tensor,
    weight: torch.Tensor,
    threshold: torch.Tensor,
    lam: torch.Tensor,
    normalize: bool,
) -> None:
    """DARE: keep where the (int32) noise is below the source's threshold."""
    xs = [
        torch.where(noise < threshold[i], row.to(torch.float32) * coef[i], 0.0)
        for i, (row, noise) in enumerate(zip(rows, noises, strict=True))
    ]
    _consensus(out, base, xs, weight, lam, normalize)


#: Graphs per kernel: one per (number of sources, normalize, input dtypes); shapes are dynamic.
RECOMPILE_LIMIT = 64


def _compiled(kind: str) -> Callable[..., None]:
    fn = _KERNELS.get(kind)
    if fn is None:
        import torch._dynamo.config as dynamo_config

        # dynamo's default (8 graphs per function) is too few for merges of 1..N sources in
        # several dtypes; hitting it would switch to the eager path in the middle of a run.
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, RECOMPILE_LIMIT)
        fn = _KERNELS[kind] = torch.compile(
            _merge_magnitude if kind == "magnitude" else _merge_noise, dynamic=True, fullgraph=True
        )
    return fn


def fused_consensus(
    out: torch.Tensor,
    base: torch.Tensor,
    rows: Sequence[torch.Tensor],
    keeps: Sequence[Keep],
    auxes: Sequence[SourceAux],
    coefs: Sequence[float],
    weights: Sequence[float],
    *,
    normalize: bool,
    lam: float,
) -> bool:
    """Write the consensus merge of flat ``rows`` onto flat ``base`` into ``out``; False if
    these keeps are not supported (or the kernel is unavailable): nothing written then."""
    if not fused_enabled():
        return False
    n = base.numel()
    coef, below, cut, thr, noises = list(coefs), [], [], [], []
    kind = None  # "magnitude" or "noise" for the whole call; mixed keeps use the eager path
    for i, k in enumerate(keeps):
        if k.kind == "none":  # contributes nothing: x_i = 0 never agrees
            coef[i] = 0.0
        elif k.kind == "mag" and k.top is None:
            kind = kind or "magnitude"
        elif k.kind == "noise":
            kind = kind or "noise"
        elif k.kind != "all":
            return False
        if (k.kind == "mag" and kind != "magnitude") or (k.kind == "noise" and kind != "noise"):
            return False
        below.append(float(k.below) if k.kind == "mag" else -1.0)  # "all": every |d| > -1
        cut.append(int(k.below_cut))
        thr.append(int(k.threshold) if k.kind == "noise" else 1 << 16)  # "all": above any noise
        noise = auxes[i].noise
        if kind == "noise" and (noise is None or noise.dtype != torch.int32 or noise.numel() != n):
            return False  # no noise for this source, or int16 (which would not vectorize)
        noises.append(noise.reshape(-1) if noise is not None else None)
    kind = kind or "magnitude"
    dev = base.device

    def f32(values: object) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32, device=dev)

    args = (f32(coef), f32(list(weights)))
    try:
        with _LOCK:
            fn = _compiled(kind)
        if kind == "magnitude":
            fn(
                out,
                base,
                list(rows),
                *args,
                f32(below),
                torch.tensor(cut, dtype=torch.int64, device=dev),
                f32(lam),
                normalize,
            )
        else:
            fn(
                out,
                base,
                list(rows),
                noises,
                *args,
                torch.tensor(thr, dtype=torch.int32, device=dev),
                f32(lam),
                normalize,
            )
    except Exception as err:  # a missing compiler, an unsupported backend: use the eager path
        _DISABLED.append(f"{type(err).__name__}: {err}")
        logger.warning(
            "fused merge kernel unavailable, using the eager path: %s", _DISABLED[0][:300]
        )
        return False
    return True
