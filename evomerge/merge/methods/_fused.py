"""A fused single-pass kernel for TIES-style sign consensus (ties, dare_ties), via torch.compile.

The eager path (:func:`._task_arithmetic._consensus_chunk`) makes about a dozen passes over
each cached chunk; compiled, the whole merge of one tensor is one loop that reads the base,
each task vector (and DARE's noise) once and writes the output once, which is what plain
task arithmetic costs. Per element, with ``keep_i`` from the source's :class:`Keep`:

    x_i = coef_i * d_i if keep_i else 0          S = sum_i x_i,  M = +1 if S >= 0 else -1
    agree_i = x_i * M > 0                         num = sum_i agree_i * x_i
    den = sum_i agree_i * weight_i (0 -> 1)       out = base + lam * num / den  (num if not normalize)

exactly the eager path's arithmetic (mergekit's semantics). Keeps handled: ``all``,
``none``, ``mag`` (its interval ``above < |d| < below``; the caller recomputes the few
``extra`` coordinates tied at a cut afterwards) and ``noise`` (DARE). The call is
classified before anything is built: keeps of another kind (DELLA), or magnitude and noise
keeps mixed, return False and the caller uses the eager path for that tensor only.

torch.compile needs a C++ compiler on CPU. Only compile/backend failures
(:data:`COMPILE_ERRORS`) are caught: they disable that kernel (magnitude or noise) for the
process with a warning naming the cause (a missing compiler does not appear later); any
other exception is a bug and propagates. :func:`fused_status` says which kernels are off.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable, Sequence

import torch
from torch._dynamo.exc import BackendCompilerFailed
from torch._inductor.exc import CppCompileError, InvalidCxxCompiler

from evomerge.merge.methods._aux import SourceAux
from evomerge.merge.methods._sparsify import Keep

logger = logging.getLogger(__name__)

__all__ = ["COMPILE_ERRORS", "fused_consensus", "fused_enabled", "fused_status"]

#: The failures of compiling a kernel (no C++ compiler, a backend that cannot build it).
COMPILE_ERRORS: tuple[type[BaseException], ...] = (
    BackendCompilerFailed,
    CppCompileError,
    InvalidCxxCompiler,
)

_LOCK = threading.Lock()
_KERNELS: dict[str, Callable[..., None]] = {}
_DISABLED: dict[str, str] = {}  # kernel kind -> why compiling it failed


def fused_enabled(kind: str | None = None) -> bool:
    """False when ``EVOMERGE_FUSED=0``, or when compiling ``kind`` (any kernel if None) failed."""
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


# Per-source scalars come in as tensors ([N] each), so new weights never recompile; the
# result is written into ``out`` inside the compiled graph (no temporary, no extra copy).
def _merge_magnitude(
    out: torch.Tensor,
    base: torch.Tensor,
    rows: list[torch.Tensor],
    coef: torch.Tensor,
    weight: torch.Tensor,
    above: torch.Tensor,
    below: torch.Tensor,
    lam: torch.Tensor,
    normalize: bool,
) -> None:
    """Magnitude trimming: keep ``above < |d| < below`` (ties at a cut are fixed up later)."""
    xs = []
    for i, row in enumerate(rows):
        d = row.to(torch.float32)
        mag = d.abs()
        keep = (mag > above[i]) & (mag < below[i])
        xs.append(torch.where(keep, d * coef[i], 0.0))
    _consensus(out, base, xs, weight, lam, normalize)


def _merge_noise(
    out: torch.Tensor,
    base: torch.Tensor,
    rows: list[torch.Tensor],
    noises: list[torch.Tensor],
    has_noise: tuple[bool, ...],
    coef: torch.Tensor,
    weight: torch.Tensor,
    threshold: torch.Tensor,
    lam: torch.Tensor,
    normalize: bool,
) -> None:
    """DARE: keep where the (int32) noise is below the source's threshold.

    ``has_noise[i]`` is False for a source that keeps everything (density 1): it has no
    noise tensor, and ``noises`` holds only the others', in order. A graph is compiled per
    pattern of ``has_noise``.
    """
    xs = []
    k = 0
    for i, row in enumerate(rows):
        x = row.to(torch.float32) * coef[i]
        if has_noise[i]:
            x = torch.where(noises[k] < threshold[i], x, 0.0)
            k += 1
        xs.append(x)
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


def _classify(keeps: Sequence[Keep], auxes: Sequence[SourceAux], n: int) -> str | None:
    """The kernel for these keeps ("magnitude" or "noise"), or None when neither applies."""
    kinds = {k.kind for k in keeps} - {"all", "none"}
    if kinds <= {"mag"}:
        return "magnitude"
    if kinds == {"noise"}:
        for k, a in zip(keeps, auxes, strict=True):
            noise = a.noise
            if k.kind == "noise" and (
                noise is None or noise.dtype != torch.int32 or noise.numel() != n
            ):
                return None  # no noise for this source, or int16 (which would not vectorize)
        return "noise"
    return None  # DELLA, or magnitude and noise keeps mixed


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

    Raises whatever the kernel raises other than :data:`COMPILE_ERRORS` (those disable the
    kernel with a warning and return False).
    """
    n = base.numel()
    kind = _classify(keeps, auxes, n)
    if kind is None or not fused_enabled(kind):
        return False
    dev = base.device
    # a source that keeps nothing contributes x_i = 0, which never agrees with the majority
    coef = [0.0 if k.kind == "none" else c for k, c in zip(keeps, coefs, strict=True)]

    def f32(values: object) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32, device=dev)

    if kind == "magnitude":
        args: tuple[object, ...] = (
            out,
            base,
            list(rows),
            f32(coef),
            f32(list(weights)),
            f32([k.above for k in keeps]),  # "all" keeps: every |d| > -1
            f32([math.inf if k.below is None else k.below for k in keeps]),
            f32(lam),
            normalize,
        )
    else:
        has_noise = tuple(k.kind == "noise" for k in keeps)
        noises = [a.noise.reshape(-1) for a, h in zip(auxes, has_noise, strict=True) if h]  # type: ignore[union-attr]
        args = (
            out,
            base,
            list(rows),
            noises,
            has_noise,
            f32(coef),
            f32(list(weights)),
            torch.tensor([k.threshold for k in keeps], dtype=torch.int32, device=dev),
            f32(lam),
            normalize,
        )
    try:
        with _LOCK:
            fn = _compiled(kind)
        fn(*args)
    except COMPILE_ERRORS as err:  # no compiler, an unsupported backend: eager from now on
        _DISABLED[kind] = f"{type(err).__name__}: {err}"
        logger.warning(
            "fused %s merge kernel cannot be compiled; ties/dare_ties use the slower eager path "
            "in this process (install a C++ compiler, or set EVOMERGE_FUSED=0 to skip this): %s",
            kind,
            _DISABLED[kind][:300],
        )
        return False
    return True
