"""nuslerp, multislerp, karcher, model_stock: merges by angles between whole tensors.

mergekit 0.1.5's semantics, per tensor, in the computation dtype:

- ``nuslerp``: spherical interpolation of two inputs at ``t = w_1 / (w_0 + w_1)`` (0.5 when
  the weights sum to ~0), over the flattened tensor (``nuslerp_flatten``, default), or
  per row (last dim), or per column (``nuslerp_row_wise``); linear where the inputs are
  colinear. With a ``base_model`` it interpolates the task vectors and adds the base.
- ``multislerp``: barycentric interpolation of N inputs on the sphere: unit vectors are
  projected to the tangent space at their weighted mean, averaged there and mapped back,
  then scaled by the weighted mean of the norms (weights normalized to sum 1 unless
  ``normalize_weights: false``); with a ``base_model``, of the task vectors.
- ``karcher``: the Riemannian (Karcher) mean of the inputs' directions with equal weights,
  by at most ``max_iter`` fixed-point steps (stop below ``tol``), times their mean norm.
  The base model, when set, is one of the inputs.
- ``model_stock``: ``t * mean(models) + (1 - t) * base`` with ``t = N cos / (1 + (N - 1) cos)``
  from the mean pairwise cosine ``cos`` of the task vectors (per row with ``filter_wise``);
  the base where the denominator vanishes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from evomerge.exceptions import MergeError
from evomerge.merge.methods._inputs import emit, inputs_and_weights, models, stacked
from evomerge.merge.methods._spec import MergeArgs

__all__ = ["karcher", "model_stock", "multislerp", "nuslerp"]


def _nuslerp(
    t: float, v0: torch.Tensor, v1: torch.Tensor, *, dim: int, flatten: bool, eps: float = 1e-8
) -> torch.Tensor:
    shape = v0.shape
    if flatten:
        v0, v1 = v0.reshape(-1), v1.reshape(-1)
    elif dim != -1:
        v0, v1 = v0.transpose(dim, -1), v1.transpose(dim, -1)

    def unit(x: torch.Tensor) -> torch.Tensor:
        return x / torch.norm(x, dim=-1, keepdim=True).clamp(min=1e-7)

    cos = torch.sum(unit(v0) * unit(v1), dim=-1, keepdim=True).clamp(-1, 1)
    colinear = (1 - cos.square()) <= eps**2
    theta = torch.acos(torch.where(colinear, 0, cos))  # finite on the branch not taken
    result = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / torch.sin(theta)
    result = torch.where(colinear, (1 - t) * v0 + t * v1, result)
    if dim != -1 and not flatten:
        result = result.transpose(dim, -1)
    return result.reshape(shape)


def nuslerp(
    base: torch.Tensor,
    deltas: torch.Tensor | Sequence[torch.Tensor],
    args: MergeArgs,
    *,
    aux: Sequence[Any] | None = None,
    out: torch.Tensor | None = None,
    workspace: Any = None,
    seed: int = 0,
    tensor_name: str = "",
) -> torch.Tensor:
    """Spherical interpolation of two models (or task vectors) weighted by their weights."""
    (v0, v1), weights = inputs_and_weights(base, deltas, args)
    total = sum(weights)
    t = 0.5 if abs(total) < 1e-6 else weights[1] / total
    g = args.globals
    result = _nuslerp(
        t, v0, v1, dim=0 if g["nuslerp_row_wise"] else -1, flatten=bool(g["nuslerp_flatten"])
    )
    return emit(base + result if args.merge_base else result, base, out)


def multislerp(
    base: torch.Tensor,
    deltas: torch.Tensor | Sequence[torch.Tensor],
    args: MergeArgs,
    *,
    aux: Sequence[Any] | None = None,
    out: torch.Tensor | None = None,
    workspace: Any = None,
    seed: int = 0,
    tensor_name: str = "",
) -> torch.Tensor:
    """Barycentric spherical interpolation of N models (or task vectors)."""
    xs, raw_weights = inputs_and_weights(base, deltas, args)
    if len(xs) == 1:  # mergekit returns the single model itself
        return emit(base + xs[0] if args.merge_base else xs[0], base, out)
    g = args.globals
    eps = float(g["eps"])
    vs = stacked(xs)  # [N, ...]
    flat = vs.view(vs.shape[0], -1)  # [N, n]
    w = torch.tensor(raw_weights, dtype=vs.dtype, device=vs.device)
    if g["normalize_weights"]:
        w = w / w.sum()
    norms = torch.norm(flat, dim=-1, keepdim=True)  # [N, 1]
    units = flat / (norms + eps)
    mean = (units * w.view(-1, 1)).sum(0)
    mean_norm = torch.norm(mean)
    if mean_norm < eps:
        if vs.shape[0] != 2:
            raise MergeError(
                f"multislerp: {tensor_name or 'a tensor'}: the weighted mean of the inputs' directions "
                "is zero (opposite inputs whose weights balance out); change the weights"
            )
        result = (vs[0] * w[0] + vs[1] * w[1]).view(vs.shape[1:])  # linear fallback
    else:
        mean = mean / mean_norm
        dots = (units * mean).sum(-1, keepdim=True)
        tangent = ((units - dots * mean) * w.view(-1, 1)).sum(0)
        tangent_norm = torch.norm(tangent) + eps
        result = mean * torch.cos(tangent_norm) + tangent * (torch.sin(tangent_norm) / tangent_norm)
        result = (result * (norms.squeeze(-1) * w).sum()).view(vs.shape[1:])
    return emit(base + result if args.merge_base else result, base, out)


def _karcher_mean(xs: list[torch.Tensor], max_iter: int, tol: float) -> torch.Tensor:
    n = len(xs)
    alphas = [1.0 / n] * n
    norm_dtype = torch.float64 if xs[0].dtype == torch.float64 else torch.float32
    norms = [torch.linalg.vector_norm(x.to(norm_dtype)) for x in xs]
    units = [
        torch.zeros_like(x) if float(nrm) == 0.0 else (x / nrm).to(x.dtype)
        for x, nrm in zip(xs, norms, strict=True)
    ]
    valid = [i for i, nrm in enumerate(norms) if float(nrm) > tol]
    if not valid:
        return sum(x * 0 for x in xs)  # type: ignore[return-value]
    total = sum(alphas[i] for i in valid)
    weights = [alphas[i] / total for i in valid]
    vunits = [units[i] for i in valid]
    mean = torch.zeros_like(vunits[0])
    for a, u in zip(weights, vunits, strict=True):
        mean += a * u
    mean_norm = torch.linalg.vector_norm(mean.to(norm_dtype))
    mean = vunits[0].clone() if float(mean_norm) < tol else (mean / mean_norm).to(mean.dtype)
    for _ in range(max_iter):
        tangent = torch.zeros_like(mean)
        for a, u in zip(weights, vunits, strict=True):
            dot = torch.clamp(torch.dot(mean.flatten(), u.flatten()), -1.0, 1.0)
            theta = torch.arccos(dot)
            if float(theta) < tol:
                continue
            tangent += a * (theta / torch.sin(theta)) * (u - dot * mean)
        tangent_norm = torch.linalg.vector_norm(tangent.to(norm_dtype))
        if float(tangent_norm) < tol:
            break
        mean = (
            torch.cos(tangent_norm) * mean + torch.sin(tangent_norm) * (tangent / tangent_norm)
        ).to(mean.dtype)
        unit_norm = torch.linalg.vector_norm(mean.to(norm_dtype))
        if float(unit_norm) > tol:
            mean = (mean / unit_norm).to(mean.dtype)
    scale = sum(a * nrm for a, nrm in zip(alphas, norms, strict=True))
    return scale * mean


def karcher(
    base: torch.Tensor,
    deltas: torch.Tensor | Sequence[torch.Tensor],
    args: MergeArgs,
    *,
    aux: Sequence[Any] | None = None,
    out: torch.Tensor | None = None,
    workspace: Any = None,
    seed: int = 0,
    tensor_name: str = "",
) -> torch.Tensor:
    """The Karcher mean of the inputs on the sphere, scaled by their mean norm."""
    xs = models(base, deltas, args)
    if len(xs) == 1:
        return emit(xs[0], base, out)
    g = args.globals
    return emit(_karcher_mean(xs, int(g["max_iter"]), float(g["tol"])), base, out)


def model_stock(
    base: torch.Tensor,
    deltas: torch.Tensor | Sequence[torch.Tensor],
    args: MergeArgs,
    *,
    aux: Sequence[Any] | None = None,
    out: torch.Tensor | None = None,
    workspace: Any = None,
    seed: int = 0,
    tensor_name: str = "",
) -> torch.Tensor:
    """Model Stock: interpolate from the base toward the models' mean by their geometry."""
    offsets = list(deltas)
    if args.globals["filter_wise"]:
        w0 = base.unsqueeze(0) if base.dim() == 1 else base  # rows along the last dim
        offsets = [o.unsqueeze(0) if base.dim() == 1 else o for o in offsets]
    else:
        w0 = base.reshape(-1)
        offsets = [o.reshape(-1) for o in offsets]
    cosines = []
    for i, a in enumerate(offsets):
        for b in offsets[i + 1 :]:
            norms = torch.norm(a, dim=-1) * torch.norm(b, dim=-1)
            cosines.append(((a * b).sum(dim=-1) / norms.clamp(min=1e-6)).clamp(-1, 1))
    cos = torch.stack(cosines).mean(dim=0).unsqueeze(-1)
    n = len(offsets)
    denominator = 1 + (n - 1) * cos
    singular = denominator.abs() < 1e-6  # no finite estimate: keep the base there
    safe = torch.where(singular, torch.ones_like(denominator), denominator)
    t = torch.where(singular, torch.zeros_like(cos), (n * cos) / safe)
    average = sum(w0 + o for o in offsets) / n  # the models' mean
    return emit((t * average + (1 - t) * w0).reshape(base.shape), base, out)
