"""A fused single-pass kernel for TIES-style sign consensus (ties, dare_ties), via torch.compile.

The eager path (:func:`._task_arithmetic._consensus_chunk`) makes about a dozen passes over
each cached chunk; compiled, the whole merge of one tensor is one loop that reads the base,
each task vector (and DARE's noise) once and writes the output once, which is what plain
task arithmetic costs. Per element, with ``keep_i`` from the source's :class:`Keep`:

    x_i = coef_i * d_i if keep_i else 0          S = sum_i x_i,  M = +1 if S >= 0 else -1
    agree_i = x_i * M > 0                         num = sum_i agree_i * x_i
    den = sum_i agree_i * weight_i (0 -> 1)       out = base + lam * num / den  (num if not normalize)

exactly the eager path's arithmetic (mergekit's semantics). Keeps handled, mixed freely:
``all``, ``none``, ``mag`` (``above < |d| < below``), ``rank`` (``lo <= rank < hi``: TIES
and breadcrumbs over mergekit's order) and ``noise`` (DARE: ``noise < threshold``). The
call is classified before anything is built: a DELLA keep returns False and the caller
uses the eager path for that tensor only. One graph is compiled per pattern of keep
kinds (a static tuple), number of sources, normalize and dtypes.

torch.compile needs a C++ compiler on CPU. Only compile/backend failures
(:func:`compile_errors`) are caught: they disable the kernel for the process with a
warning naming the cause (a missing compiler does not appear later); any other exception
is a bug and propagates. :func:`fused_status` says why it is off.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, Sequence

import torch

from evomerge.merge.methods._aux import SourceAux
from evomerge.merge.methods._sparsify import Keep

logger = logging.getLogger(__name__)

__all__ = [
    "FUSED_MIN_NUMEL",
    "compile_errors",
    "fused_consensus",
    "fused_enabled",
    "fused_status",
]


def compile_errors() -> tuple[type[BaseException], ...]:
    """The failures of compiling a kernel (no C++ compiler, a backend that cannot build it).

    Imported on first use: importing torch's compiler takes about a second, which a merge
    that never compiles (a one-off below ``ONE_OFF_COMPILE_MIN``) should not pay.
    """
    from torch._dynamo.exc import BackendCompilerFailed
    from torch._inductor.exc import CppCompileError, InvalidCxxCompiler

    return (BackendCompilerFailed, CppCompileError, InvalidCxxCompiler)


_LOCK = threading.Lock()
_KERNELS: dict[str, Callable[..., None]] = {}
_DISABLED: dict[str, str] = {}  # kernel kind -> why compiling it failed


def fused_enabled(kind: str | None = None) -> bool:
    """False when ``EVOMERGE_FUSED=0``, or when compiling the kernel failed in this process."""
    if os.environ.get("EVOMERGE_FUSED", "1") == "0":
        return False
    return not _DISABLED if kind is None else kind not in _DISABLED


def fused_status() -> dict[str, str]:
    """``{kernel kind: reason}`` for each kernel that failed to compile in this process."""
    return dict(_DISABLED)


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


# Per-source scalars come in as tensors ([N] each), so new weights or cuts never recompile;
# the result is written into ``out`` inside the compiled graph (no temporary, no extra copy).
def _merge(
    out: torch.Tensor,
    base: torch.Tensor,
    rows: list[torch.Tensor],
    ints: list[torch.Tensor],
    kinds: tuple[str, ...],
    coef: torch.Tensor,
    weight: torch.Tensor,
    above: torch.Tensor,
    below: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    lam: torch.Tensor,
    normalize: bool,
) -> None:
    """``kinds[i]``: "all" (kept), "mag" (``above < |d| < below``) or "int" (``lo <= v < hi``
    with ``v`` the next of ``ints``: ranks or DARE noise, int32)."""
    xs = []
    k = 0
    for i, row in enumerate(rows):
        d = row.to(torch.float32)
        x = d * coef[i]
        if kinds[i] == "mag":
            mag = d.abs()
            x = torch.where((mag > above[i]) & (mag < below[i]), x, 0.0)
        elif kinds[i] == "int":
            v = ints[k]
            k += 1
            x = torch.where((v >= lo[i]) & (v < hi[i]), x, 0.0)
        xs.append(x)
    _consensus(out, base, xs, weight, lam, normalize)


#: Graphs per kernel: one per (number of sources, normalize, input dtypes); shapes are dynamic.
RECOMPILE_LIMIT = 64
#: Smaller tensors (norms, tiny models) take the eager path: a compiled call costs a fixed
#: overhead (guards, an OpenMP region whose threads may be descheduled on a busy CPU) that
#: only pays off on large tensors. Both paths compute mergekit's arithmetic.
FUSED_MIN_NUMEL = 1 << 16


_KIND = "consensus"  # the one kernel; kept as a name for fused_status()


def _compiled(kind: str) -> Callable[..., None]:
    fn = _KERNELS.get(kind)
    if fn is None:
        import torch._dynamo.config as dynamo_config

        # dynamo's default (8 graphs per function) is too few for merges of 1..N sources in
        # several dtypes; hitting it would switch to the eager path in the middle of a run.
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, RECOMPILE_LIMIT)
        fn = _KERNELS[kind] = torch.compile(_merge, dynamic=True, fullgraph=True)
    return fn


def _classify(keeps: Sequence[Keep], auxes: Sequence[SourceAux], n: int) -> tuple[str, ...] | None:
    """The kernel's kind per source, or None when a keep is not supported (DELLA)."""
    kinds = []
    for k, a in zip(keeps, auxes, strict=True):
        if k.kind in ("all", "none"):
            kinds.append("all")  # a "none" source gets coefficient 0
        elif k.kind == "mag":
            kinds.append("mag")
        elif k.kind == "rank":
            if k.ranks is None or k.ranks.dtype != torch.int32 or k.ranks.numel() != n:
                return None
            kinds.append("int")
        elif k.kind == "noise":
            noise = a.noise
            if noise is None or noise.dtype != torch.int32 or noise.numel() != n:
                return None  # no noise for this source, or int16 (which would not vectorize)
            kinds.append("int")
        else:
            return None
    return tuple(kinds)


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
    these keeps are not supported (or the kernel is unavailable): nothing written then.

    Raises whatever the kernel raises other than :func:`compile_errors` (those disable the
    kernel with a warning and return False).
    """
    n = base.numel()
    if n < FUSED_MIN_NUMEL:
        return False
    kinds = _classify(keeps, auxes, n)
    if kinds is None or not fused_enabled(_KIND):
        return False
    dev = base.device
    # a source that keeps nothing contributes x_i = 0, which never agrees with the majority
    coef = [0.0 if k.kind == "none" else c for k, c in zip(keeps, coefs, strict=True)]
    ints = []
    lo, hi = [], []
    for k, a in zip(keeps, auxes, strict=True):
        if k.kind == "rank":
            assert k.ranks is not None
            ints.append(k.ranks.reshape(-1))
            lo.append(k.lo)
            hi.append(k.hi)
        elif k.kind == "noise":
            assert a.noise is not None
            ints.append(a.noise.reshape(-1))
            lo.append(-(1 << 31))
            hi.append(k.threshold)
        else:
            lo.append(0)
            hi.append(0)

    def f32(values: object) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32, device=dev)

    def i32(values: object) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.int32, device=dev)

    args = (
        out,
        base,
        list(rows),
        ints,
        kinds,
        f32(coef),
        f32(list(weights)),
        f32([k.above for k in keeps]),
        f32([math.inf if k.below is None else k.below for k in keeps]),
        i32(lo),
        i32(hi),
        f32(lam),
        normalize,
    )
    try:
        with _LOCK:
            fn = _compiled(_KIND)
        fn(*args)
    except compile_errors() as err:  # no compiler, an unsupported backend: eager from now on
        _DISABLED[_KIND] = f"{type(err).__name__}: {err}"
        logger.warning(
            "fused merge kernel cannot be compiled; ties/dare_ties use the slower eager path "
            "in this process (install a C++ compiler, or set EVOMERGE_FUSED=0 to skip this): %s",
            _DISABLED[_KIND][:300],
        )
        return False
    return True
