"""linear, slerp and passthrough: methods on whole weights, written in terms of base + deltas.

- ``linear`` (mergekit 0.1.5): ``sum_j w_j x_j`` over every input (the base too when it is
  an input), divided by ``sum_j w_j`` if ``normalize`` (default true); computed in float32
  (float64 for float64 inputs) and returned in the inputs' dtype. With ``x_i = base +
  delta_i`` this is ``W * base + sum_i w_i delta_i`` (``base + sum_i (w_i / W) delta_i``
  when normalized).
- ``slerp``: spherical interpolation from the base (``t = 0``) to the other model
  (``t = 1``) over the whole flattened tensor, linear when the cosine exceeds 0.9995;
  float32 statistics and coefficients as mergekit's, result in the inputs' dtype.
- ``passthrough``: the single input, times ``scale`` if given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from evomerge.merge.methods._aux import SlerpStats, SourceAux, chunks, slerp_stats
from evomerge.merge.methods._spec import MergeArgs
from evomerge.merge.methods._workspace import OutWriter, Workspace

__all__ = ["linear", "passthrough", "slerp", "slerp_coefficients"]

_DOT_THRESHOLD = 0.9995


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def linear(
    base: torch.Tensor,
    deltas: torch.Tensor | Sequence[torch.Tensor],
    args: MergeArgs,
    *,
    aux: Sequence[Any] | None = None,
    out: torch.Tensor | None = None,
    workspace: Workspace | None = None,
    seed: int = 0,
    tensor_name: str = "",
) -> torch.Tensor:
    """Weighted average (or sum) of the inputs; see the module docstring."""
    ws = workspace or Workspace()
    work = _work_dtype(base.dtype)

    def as_work(x: float) -> float:
        return float(torch.tensor(x, dtype=work))

    w_src = [as_work(p["weight"]) for p in args.inputs]
    w_base = as_work(args.base["weight"]) if args.base is not None else 0.0
    total = float(torch.tensor([w_base, *w_src], dtype=work).sum())
    if args.globals["normalize"]:
        base_coef, coefs = 1.0, [w / total for w in w_src]
    else:
        base_coef, coefs = total, w_src
    rows = [d.reshape(-1) for d in deltas]  # N x [numel]
    flat_base = base.reshape(-1)  # [numel]
    numel = flat_base.numel()
    writer = OutWriter(out, base, work, ws)
    for s, e in chunks(numel, base.device):
        acc = writer.target(s, e)
        if base_coef == 1.0:
            acc.copy_(flat_base[s:e])
        else:
            torch.mul(flat_base[s:e], base_coef, out=acc)
        for d, c in zip(rows, coefs, strict=True):
            acc.add_(d[s:e], alpha=c)
        writer.store(s, e, acc)
    return writer.finish()


def slerp_coefficients(t: float, stats: SlerpStats) -> tuple[float, float]:
    """``(c0, c1)`` with ``result = c0 * v0 + c1 * v1``, computed in float32 as mergekit."""
    f = torch.float32
    tt = torch.tensor(t, dtype=f)
    dot = torch.tensor(stats.dot, dtype=f)
    if abs(float(dot)) > _DOT_THRESHOLD:
        return float(1 - tt), float(tt)
    theta = torch.acos(dot)
    sin_theta = torch.sin(theta)
    return float(torch.sin((1 - tt) * theta) / sin_theta), float(torch.sin(tt * theta) / sin_theta)


def slerp(
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
    """Spherical interpolation between the base and ``base + deltas[0]`` at ``t``."""
    ws = workspace or Workspace()
    (delta,) = list(deltas)
    a = aux[0] if aux is not None else None
    stats = a.slerp if a is not None and a.slerp is not None else slerp_stats(base, delta)
    c0, c1 = slerp_coefficients(float(args.globals["t"]), stats)
    work = _work_dtype(base.dtype)
    flat_base, flat_delta = base.reshape(-1), delta.reshape(-1)  # [numel]
    numel = flat_base.numel()
    writer = OutWriter(out, base, base.dtype, ws)
    for s, e in chunks(numel, base.device):
        x = ws.get("x", (e - s,), work, base.device)
        y = ws.get("y", (e - s,), work, base.device)
        x.copy_(flat_base[s:e])
        torch.add(x, flat_delta[s:e], out=y)  # v1 = base + delta
        y.mul_(c1)
        y.add_(x, alpha=c0)
        tgt = writer.target(s, e)
        tgt.copy_(y)
        writer.store(s, e, tgt)
    return writer.finish()


def passthrough(
    base: torch.Tensor,
    deltas: torch.Tensor | Sequence[torch.Tensor],
    args: MergeArgs,
    *,
    aux: Sequence[Any] | None = None,
    out: torch.Tensor | None = None,
    workspace: Workspace | None = None,
    seed: int = 0,
    tensor_name: str = "",
) -> torch.Tensor:
    """The single input (the base, or ``base + deltas[0]``), times ``scale`` if set."""
    ws = workspace or Workspace()
    rows = [d.reshape(-1) for d in deltas]  # [numel] each
    scale = args.base.get("scale") if args.base is not None else args.inputs[0].get("scale")
    flat_base = base.reshape(-1)  # [numel]
    writer = OutWriter(out, base, base.dtype, ws)
    for s, e in chunks(flat_base.numel(), base.device):
        tgt = writer.target(s, e)
        if rows:
            torch.add(flat_base[s:e], rows[0][s:e], out=tgt)
        else:
            tgt.copy_(flat_base[s:e])
        if scale is not None:
            tgt.mul_(scale)
        writer.store(s, e, tgt)
    return writer.finish()
