"""The task-arithmetic family: task_arithmetic, ties, dare_*, breadcrumbs*, della*.

mergekit 0.1.5's ``GeneralizedTaskArithmeticMerge``, per tensor, in the computation dtype:

1. each task vector is sparsified (see :mod:`._sparsify`), L1-rescaled if ``rescale``;
2. multiplied by its ``weight``;
3. with sign consensus (ties, dare_ties, breadcrumbs_ties, della): per element the
   majority sign is the sign of the sum (>= 0 counts as +), only entries with that sign
   are summed, and the divisor is the sum of their weights (0 -> 1); without consensus
   everything is summed and the divisor is the sum of weights (|sum| < 1e-8 -> 1);
4. divided by the divisor if ``normalize``, multiplied by ``lambda``, added to the base.

The kernel walks the tensor in chunks (:func:`chunks`) with reused scratch, so every pass
over the N sources stays in cache and nothing of size ``[N, numel]`` is allocated; 16-bit
inputs are widened to float32 per chunk (mergekit rounds after every op in that dtype; the
results agree to its rounding). ``int8_mask`` only changes mergekit's mask storage; it is accepted and ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from evomerge.merge.methods._aux import SourceAux, build_aux, chunks, map_sources, row_length
from evomerge.merge.methods._fused import fused_consensus
from evomerge.merge.methods._sparsify import (
    RESCALE_EPS,
    Keep,
    bernoulli_keep,
    della_keep,
    emit_kept,
    kept_l1,
    magnitude_keep,
    outlier_keep,
    work_dtype,
)
from evomerge.merge.methods._spec import MergeArgs, Need
from evomerge.merge.methods._workspace import OutWriter, Workspace

__all__ = [
    "ONE_OFF_SKIPS",
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
    "magnitude_outliers": frozenset({Need.ASCENDING_RANK}),
    "random": frozenset({Need.NOISE, Need.NOISE_L1}),
    "della_magprune": frozenset({Need.ROW_RANK, Need.NOISE}),
}


#: Precomputations a one-off merge skips: it selects the cuts in linear time and sorts only
#: when ties straddle a cut (see magnitude_keep); the engine sorts once, so that each
#: trial's cut is a lookup.
ONE_OFF_SKIPS: dict[str | None, frozenset[Need]] = {
    "magnitude": frozenset({Need.MAGNITUDE_RANK}),
    "magnitude_outliers": frozenset({Need.ASCENDING_RANK}),
}


def _keep(method: str | None, flat: torch.Tensor, a: SourceAux, p: Any, shape: torch.Size) -> Keep:
    if method is None:
        return Keep("all")
    if method == "magnitude":
        return magnitude_keep(flat, a.rank, p["density"])
    if method == "magnitude_outliers":
        return outlier_keep(flat, a.ascending_rank, p["density"], p["gamma"])
    if method == "random":
        return bernoulli_keep(p["density"])
    if method == "della_magprune":
        return della_keep(p["density"], p["epsilon"], row_length(shape))
    raise ValueError(
        f"Unknown sparsification {method!r}. Available: {', '.join(str(k) for k in SPARSIFICATION_NEEDS)}"
    )


def _round(x: float, dtype: torch.dtype) -> float:
    """``x`` as a value of ``dtype`` (mergekit holds weights in the computation dtype)."""
    return float(torch.tensor(x, dtype=dtype))


def _rows(deltas: torch.Tensor | Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The N task vectors as flat rows ``[numel]``, without copying.

    Stacked and listed deltas then take the same arithmetic path, so they give the same bits.
    """
    if isinstance(deltas, torch.Tensor):
        return list(deltas.reshape(deltas.shape[0], -1))  # N x [numel]
    return [d.reshape(-1) for d in deltas]


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

    ``aux[i]`` supplies delta i's order/noise; whatever is missing is computed here, the
    noise from ``seed``, ``tensor_name`` and the delta's position ``i``, so the same call
    always gives the same tensor.
    """
    ws = workspace or Workspace()
    rows = _rows(deltas)
    flat_base = base.reshape(-1)  # [numel]
    numel, dtype, dev = flat_base.numel(), base.dtype, base.device
    work = work_dtype(dtype)  # chunk arithmetic; 16-bit values are widened exactly
    writer = OutWriter(out, base, work, ws)
    if not rows:
        for s, e in chunks(numel, dev):
            tgt = writer.target(s, e)
            tgt.copy_(flat_base[s:e])
            writer.store(s, e, tgt)
        return writer.finish()
    g = args.globals
    needs = SPARSIFICATION_NEEDS[sparsification]

    def prepare(i: int) -> tuple[SourceAux, Keep]:  # what is missing, then the cut
        a, p = aux[i] if aux is not None else None, args.inputs[i]
        if (sparsification is not None and p["density"] < 1) or g["rescale"]:
            a = build_aux(
                needs - ONE_OFF_SKIPS.get(sparsification, frozenset()),
                base,
                rows[i].view(base.shape),
                seed=seed,
                tensor_name=tensor_name,
                source_key=str(i),
                previous=a,
            )
        a = a or SourceAux()
        return a, _keep(sparsification, rows[i], a, p, base.shape)

    # sorts and noise draws still to do (a one-off merge) run on parallel threads; a trial
    # of the engine, whose precomputations are all there, is not worth a thread pool
    todo = needs - {Need.NOISE_L1}
    if todo and any(a is None or a.lacks(todo) for a in (aux if aux is not None else [None])):
        prepared = map_sources(prepare, len(rows))
    else:
        prepared = [prepare(i) for i in range(len(rows))]
    keeps: list[Keep] = []
    auxes: list[SourceAux] = []
    coefs: list[float] = []
    weights: list[float] = []
    for (a, keep), flat, p in zip(prepared, rows, args.inputs, strict=True):
        w = _round(p["weight"], dtype)
        scale = 1.0
        if g["rescale"] and keep.kind != "all":
            before, after = a.l1 or 0.0, kept_l1(flat, keep, a, ws)
            if before >= RESCALE_EPS and after >= RESCALE_EPS:
                scale = _round(before, dtype) / _round(after, dtype)
        keeps.append(keep if w != 0 else Keep("none"))
        auxes.append(a)
        weights.append(w)
        coefs.append(w * scale)
    normalize, lam = bool(g["normalize"]), float(g["lambda"])
    if not consensus:
        total = float(torch.tensor(weights, dtype=dtype).sum())
        divisor = total if normalize and abs(total) >= 1e-8 else 1.0
        alphas = [c * lam / divisor for c in coefs]
        alpha = torch.tensor(alphas, dtype=work, device=dev)

        def mix(tgt: torch.Tensor, b: torch.Tensor, em: torch.Tensor) -> None:
            if dtype == work:
                torch.addmv(b, em.t(), alpha, out=tgt)
            else:
                tgt.copy_(b)
                tgt.addmv_(em.t(), alpha)

        all_kept = all(k.kind == "all" for k in keeps)
        for s, e in chunks(numel, dev):
            tgt = writer.target(s, e)
            if all_kept:  # one elementwise path for stacked and listed deltas: same bits either way
                tgt.copy_(flat_base[s:e])
                for r, a_i in zip(rows, alphas, strict=True):
                    tgt.add_(r[s:e], alpha=a_i)
            else:
                em = ws.get("E", (len(rows), e - s), work, dev)  # [N, c]
                for i, r in enumerate(rows):
                    emit_kept(em[i], r[s:e], keeps[i], auxes[i], s, e, ws)
                mix(tgt, flat_base[s:e], em)
            writer.store(s, e, tgt)
        return writer.finish()
    consts = _Consensus(
        coef=torch.tensor(coefs, dtype=work, device=dev).view(-1, 1),
        weight=torch.tensor(weights, dtype=work, device=dev).view(-1, 1),
        positive_weights=all(w > 0 for w in weights),
        normalize=normalize,
        lam=lam,
    )

    def elect(tgt: torch.Tensor, b: torch.Tensor, em: torch.Tensor) -> None:
        _consensus_chunk(tgt, b, em, consts, ws)

    if (
        ws.compiled
        and work == torch.float32
        and writer.out.is_contiguous()
        and fused_consensus(
            writer.out.view(-1),
            flat_base,
            rows,
            keeps,
            auxes,
            coefs,
            weights,
            normalize=normalize,
            lam=lam,
        )
    ):  # one compiled pass instead of the chunked eager passes below
        return writer.out
    for s, e in chunks(numel, dev):
        em = ws.get("E", (len(rows), e - s), work, dev)  # [N, c]: sparsified task vectors
        for i, r in enumerate(rows):
            emit_kept(em[i], r[s:e], keeps[i], auxes[i], s, e, ws)
        tgt = writer.target(s, e)
        elect(tgt, flat_base[s:e], em)
        writer.store(s, e, tgt)
    return writer.finish()


@dataclass(frozen=True)
class _Consensus:
    coef: torch.Tensor  # [N, 1] weight x rescale
    weight: torch.Tensor  # [N, 1] raw weights (the divisor's terms)
    positive_weights: bool
    normalize: bool
    lam: float


def _consensus_chunk(
    tgt: torch.Tensor, base: torch.Tensor, em: torch.Tensor, k: _Consensus, ws: Workspace
) -> None:
    """TIES sign election and disjoint merge of one chunk; ``em`` [N, c] is overwritten.

    mergekit's arithmetic, op for op (the majority sign of a sum that cancels, common with
    quantized task vectors and weights such as 0.5 and 0.3, depends on each rounding):
    ``x_i = coef_i * em_i`` rounded; ``S = sum_i x_i`` in source order; ``M = +1`` where
    ``S >= 0`` else -1; ``x_i`` is kept where ``x_i * M > 0``; the merged delta is the kept
    sum, divided by the kept weights' sum (0 -> 1) when normalizing, times lambda.
    """
    c, dtype, dev = base.numel(), em.dtype, base.device
    em.mul_(k.coef)  # x_i
    total = ws.get("S", (c,), dtype, dev)
    torch.sum(em, dim=0, out=total)  # [c]: S
    sign = ws.get("M", (c,), dtype, dev)
    torch.sign(total, out=sign)
    sign.add_(0.5).sign_()  # {-1, 0, 1} -> {-1, 1, 1}: M = +1 where S >= 0 (-0.0 included)
    em.mul_(sign)
    em.clamp_(min=0)  # x_i * M where x_i agrees with the majority, else 0
    torch.sum(em, dim=0, out=total)
    total.mul_(sign)  # [c]: the kept sum, in source order
    if k.normalize:
        em.sign_()  # 1 where kept
        em.mul_(k.weight)
        div = ws.get("D", (c,), dtype, dev)
        torch.sum(em, dim=0, out=div)  # [c]: the kept weights' sum
        if k.positive_weights:
            div.clamp_(min=torch.finfo(dtype).tiny)  # 0 only where nothing is kept (sum 0)
        else:
            div.masked_fill_(div == 0, 1)
        total.div_(div)
    if k.lam != 1:
        total.mul_(k.lam)
    torch.add(base, total, out=tgt)


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
            base,
            deltas,
            args,
            sparsification=sparsification,
            consensus=consensus,
            aux=aux,
            out=out,
            workspace=workspace,
            seed=seed,
            tensor_name=tensor_name,
        )

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"{doc} See :func:`generalized_task_arithmetic` for the arguments."
    return fn


task_arithmetic = _variant(
    None, False, "task_arithmetic", "base + lambda * sum_i w_i delta_i (/ sum w if normalize)."
)
ties = _variant(
    "magnitude", True, "ties", "TIES: top-k magnitude trimming, sign consensus, disjoint mean."
)
dare_linear = _variant(
    "random", False, "dare_linear", "DARE: random drop with rescale, then a weighted sum."
)
dare_ties = _variant("random", True, "dare_ties", "DARE random drop with TIES sign consensus.")
breadcrumbs = _variant(
    "magnitude_outliers", False, "breadcrumbs", "Model breadcrumbs: drop outliers and small values."
)
breadcrumbs_ties = _variant(
    "magnitude_outliers", True, "breadcrumbs_ties", "Breadcrumbs with TIES sign consensus."
)
della = _variant(
    "della_magprune", True, "della", "DELLA: magnitude-ranked random drop, sign consensus."
)
della_linear = _variant("della_magprune", False, "della_linear", "DELLA without sign consensus.")
