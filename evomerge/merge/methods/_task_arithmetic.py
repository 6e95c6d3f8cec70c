"""The task-arithmetic family: task_arithmetic, ties, dare_*, breadcrumbs*, della*.

mergekit 0.1.5's ``GeneralizedTaskArithmeticMerge``, per tensor, in the computation dtype:

1. each task vector is sparsified (see :mod:`._sparsify`), L1-rescaled if ``rescale``;
2. multiplied by its ``weight``;
3. with sign consensus (ties, dare_ties, breadcrumbs_ties, della): per element the
   majority sign is the sign of the sum (>= 0 counts as +), only entries with that sign
   are summed, and the divisor is the sum of their weights (0 -> 1); without consensus
   everything is summed and the divisor is the sum of weights (|sum| < 1e-8 -> 1);
4. divided by the divisor if ``normalize``, multiplied by ``lambda``, added to the base.

The kernel walks the tensor in chunks of :data:`CHUNK` elements with reused scratch, so
every pass over the N sources stays in cache and nothing of size ``[N, numel]`` is
allocated. ``int8_mask`` only changes mergekit's mask storage; it is accepted and ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from evomerge.merge.methods._aux import CHUNK, SourceAux, build_aux, row_length
from evomerge.merge.methods._spec import MergeArgs, Need
from evomerge.merge.methods._sparsify import (
    RESCALE_EPS,
    Keep,
    bernoulli_keep,
    della_keep,
    kept_l1,
    magnitude_keep,
    mask_chunk,
    outlier_keep,
)
from evomerge.merge.methods._workspace import OutWriter, Workspace

__all__ = [
    "SPARSIFICATION_NEEDS",
    "breadcrumbs",
    "breadcrumbs_ties",
    "dare_linear",
    "dare_ties",
    "della",
    "della_linear",
    "generalized_task_arithmetic",
    "task_arithmetic",
    "ties",
]

SPARSIFICATION_NEEDS: dict[str | None, frozenset[Need]] = {
    None: frozenset(),
    "magnitude": frozenset({Need.MAGNITUDE_RANK}),
    "magnitude_outliers": frozenset({Need.MAGNITUDE_RANK}),
    "random": frozenset({Need.NOISE, Need.NOISE_L1}),
    "della_magprune": frozenset({Need.ROW_RANK, Need.NOISE}),
}


def _keep(method: str | None, delta: torch.Tensor, p: Any) -> Keep:
    n = delta.numel()
    if method is None:
        return Keep("all")
    if method == "magnitude":
        return magnitude_keep(n, p["density"])
    if method == "magnitude_outliers":
        return outlier_keep(n, p["density"], p["gamma"])
    if method == "random":
        return bernoulli_keep(p["density"])
    if method == "della_magprune":
        return della_keep(p["density"], p["epsilon"], row_length(delta))
    raise ValueError(f"Unknown sparsification {method!r}. Available: {', '.join(str(k) for k in SPARSIFICATION_NEEDS)}")


def _round(x: float, dtype: torch.dtype) -> float:
    """``x`` as a value of ``dtype`` (mergekit holds weights in the computation dtype)."""
    return float(torch.tensor(x, dtype=dtype))


def generalized_task_arithmetic(
    base: torch.Tensor,
    deltas: torch.Tensor | Sequence[torch.Tensor],
    args: MergeArgs,
    *,
    sparsification: str | None,
    consensus: bool,
    aux: Sequence[SourceAux | None] | None = None,
    out: torch.Tensor | None = None,
    workspace: Workspace | None = None,
    seed: int = 0,
    tensor_name: str = "",
) -> torch.Tensor:
    """Merge ``base + mix(deltas)``; see the module docstring. Returns ``out``.

    ``aux[i]`` supplies delta i's ranks/noise; whatever is missing is computed here, the
    noise from ``seed``, ``tensor_name`` and the delta's position ``i``, so the same call
    always gives the same tensor.
    """
    ws = workspace or Workspace()
    rows = [d.reshape(-1) for d in deltas]  # N x [numel]
    flat_base = base.reshape(-1)  # [numel]
    numel, dtype = flat_base.numel(), base.dtype
    writer = OutWriter(out, base, dtype, ws)
    if not rows:
        writer.target(0, numel).copy_(flat_base)
        writer.store(0, numel, writer.target(0, numel))
        return writer.finish()
    g = args.globals
    needs = SPARSIFICATION_NEEDS[sparsification]
    auxes: list[SourceAux] = []
    keeps: list[Keep] = []
    coefs: list[float] = []
    weights: list[float] = []
    for i, (d, p) in enumerate(zip(deltas, args.inputs, strict=True)):
        a = aux[i] if aux is not None and aux[i] is not None else None
        keep = _keep(sparsification, d, p)
        if keep.kind not in ("all", "none") or g["rescale"]:
            a = build_aux(needs, base, d, seed=seed, tensor_name=tensor_name, source_key=str(i), previous=a)
        a = a or SourceAux()
        w = _round(p["weight"], dtype)
        scale = 1.0
        if g["rescale"] and keep.kind != "all":
            before, after = a.l1 or 0.0, kept_l1(rows[i], keep, a, ws)
            if before >= RESCALE_EPS and after >= RESCALE_EPS:
                scale = _round(before, dtype) / _round(after, dtype)
        auxes.append(a)
        keeps.append(keep)
        weights.append(w)
        coefs.append(w * scale)
    normalize, lam = bool(g["normalize"]), float(g["lambda"])
    if consensus:
        wvec = torch.tensor(weights, dtype=dtype, device=base.device)
        for s in range(0, numel, CHUNK):
            e = min(numel, s + CHUNK)
            _consensus_chunk(flat_base, rows, keeps, auxes, coefs, wvec, s, e, writer, ws, normalize, lam)
        return writer.finish()
    total = float(torch.tensor(weights, dtype=dtype).sum())
    divisor = total if normalize and abs(total) >= 1e-8 else 1.0
    for s in range(0, numel, CHUNK):
        e = min(numel, s + CHUNK)
        acc = ws.get("acc", (e - s,), dtype, base.device)
        _sum_chunk(acc, rows, keeps, auxes, coefs, s, e, ws)
        if divisor != 1.0:
            acc.div_(divisor)
        if lam != 1:
            acc.mul_(lam)
        tgt = writer.target(s, e)
        torch.add(flat_base[s:e], acc, out=tgt)
        writer.store(s, e, tgt)
    return writer.finish()


def _emit(dst: torch.Tensor, d: torch.Tensor, keep: Keep, a: SourceAux, coef: float, s: int, e: int, ws: Workspace) -> None:
    """``dst = keep_mask * d * coef`` for elements ``[s, e)``."""
    if keep.kind == "none" or coef == 0:
        dst.zero_()
        return
    if keep.kind == "all":
        torch.mul(d, coef, out=dst)
        return
    torch.where(mask_chunk(keep, a, s, e, ws), d, ws.zero(d.dtype, d.device), out=dst)
    if coef != 1:
        dst.mul_(coef)


def _sum_chunk(acc: torch.Tensor, rows: list[torch.Tensor], keeps: list[Keep], auxes: list[SourceAux],
               coefs: list[float], s: int, e: int, ws: Workspace) -> None:  # fmt: skip
    """``acc = sum_i keep_i * delta_i * coef_i`` over ``[s, e)``."""
    _emit(acc, rows[0][s:e], keeps[0], auxes[0], coefs[0], s, e, ws)
    for i in range(1, len(rows)):
        d, keep = rows[i][s:e], keeps[i]
        if keep.kind == "none" or coefs[i] == 0:
            continue
        if keep.kind == "all":
            acc.add_(d, alpha=coefs[i])
            continue
        tmp = ws.get("tmp", (e - s,), acc.dtype, acc.device)
        torch.where(mask_chunk(keep, auxes[i], s, e, ws), d, ws.zero(d.dtype, d.device), out=tmp)
        acc.add_(tmp, alpha=coefs[i])


def _consensus_chunk(base: torch.Tensor, rows: list[torch.Tensor], keeps: list[Keep], auxes: list[SourceAux],
                     coefs: list[float], wvec: torch.Tensor, s: int, e: int, writer: OutWriter, ws: Workspace,
                     normalize: bool, lam: float) -> None:  # fmt: skip
    n, c, dtype, dev = len(rows), e - s, base.dtype, base.device
    em = ws.get("E", (n, c), dtype, dev)  # [N, c]: weighted, sparsified task vectors
    for i in range(n):
        _emit(em[i], rows[i][s:e], keeps[i], auxes[i], coefs[i], s, e, ws)
    total = ws.get("S", (c,), dtype, dev)
    torch.sum(em, dim=0, out=total)
    # majority sign: +1 where the sum is >= 0 (a -0.0 sum only arises when every entry is 0)
    sign = ws.get("M", (c,), dtype, dev)
    torch.copysign(torch.ones((), dtype=dtype, device=dev), total, out=sign)
    em.mul_(sign)  # entries agreeing with the majority are now > 0
    em.clamp_(min=0)
    torch.sum(em, dim=0, out=total)
    total.mul_(sign)  # sum of the agreeing entries
    if normalize:
        em.sign_()  # 1 where an entry was kept by the consensus
        div = ws.get("D", (c,), dtype, dev)
        torch.mv(em.t(), wvec, out=div)  # [c]: sum of the kept entries' weights
        zero = ws.get("Z", (c,), torch.bool, dev)
        torch.eq(div, 0, out=zero)
        div.masked_fill_(zero, 1)
        total.div_(div)
    if lam != 1:
        total.mul_(lam)
    tgt = writer.target(s, e)
    torch.add(base[s:e], total, out=tgt)
    writer.store(s, e, tgt)


def _variant(sparsification: str | None, consensus: bool, name: str, doc: str) -> Any:
    def fn(
        base: torch.Tensor,
        deltas: torch.Tensor | Sequence[torch.Tensor],
        args: MergeArgs,
        *,
        aux: Sequence[SourceAux | None] | None = None,
        out: torch.Tensor | None = None,
        workspace: Workspace | None = None,
        seed: int = 0,
        tensor_name: str = "",
    ) -> torch.Tensor:
        return generalized_task_arithmetic(
            base, deltas, args, sparsification=sparsification, consensus=consensus, aux=aux, out=out,
            workspace=workspace, seed=seed, tensor_name=tensor_name,
        )  # fmt: skip

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"{doc} See :func:`generalized_task_arithmetic` for the arguments."
    return fn


task_arithmetic = _variant(None, False, "task_arithmetic", "base + lambda * sum_i w_i delta_i (/ sum w if normalize).")
ties = _variant("magnitude", True, "ties", "TIES: top-k magnitude trimming, sign consensus, disjoint mean.")
dare_linear = _variant("random", False, "dare_linear", "DARE: random drop with rescale, then a weighted sum.")
dare_ties = _variant("random", True, "dare_ties", "DARE random drop with TIES sign consensus.")
breadcrumbs = _variant("magnitude_outliers", False, "breadcrumbs", "Model breadcrumbs: drop outliers and small values.")
breadcrumbs_ties = _variant("magnitude_outliers", True, "breadcrumbs_ties", "Breadcrumbs with TIES sign consensus.")
della = _variant("della_magprune", True, "della", "DELLA: magnitude-ranked random drop, sign consensus.")
della_linear = _variant("della_magprune", False, "della_linear", "DELLA without sign consensus.")
