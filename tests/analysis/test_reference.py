"""An independent, straightforward NumPy reference on random tiny models, and mergekit's TIES mask."""

from __future__ import annotations

import math
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from evomerge.analysis import analyze_pool
from evomerge.analysis._figures import flatten
from evomerge.pool import ModelPool


def load_dir(d: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def stable_trim(x: np.ndarray, density: float) -> np.ndarray:
    k = max(1, int(density * x.size))
    keep = np.argsort(-np.abs(x), kind="stable")[:k]
    out = np.zeros_like(x)
    out[keep] = x[keep]
    return out


def reference(
    base: Path, models: dict[str, Path], order: list[str], density: float | None, scope: str
) -> dict[str, Any]:
    """Whole-model and per-tensor figures, computed the obvious way on whole flat arrays."""
    b = load_dir(base)
    taus = {}
    for m, d in models.items():
        w = load_dir(d)
        taus[m] = {
            t: (w[t].astype(np.float32) - b[t].astype(np.float32)).astype(np.float64).ravel()
            for t in order
        }
    raw = {m: dict(v) for m, v in taus.items()}
    if density is not None:
        for m in taus:
            if scope == "tensor":
                taus[m] = {t: stable_trim(x, density) for t, x in taus[m].items()}
            else:
                flat = stable_trim(np.concatenate([taus[m][t] for t in order]), density)
                splits = np.cumsum([taus[m][t].size for t in order])[:-1]
                taus[m] = dict(zip(order, np.split(flat, splits), strict=True))

    def figs(tensors: list[str]) -> dict[str, Any]:
        X = np.stack([np.concatenate([taus[m][t] for t in tensors]) for m in models])  # [M, n]
        R = np.stack([np.concatenate([raw[m][t] for t in tensors]) for m in models])
        names = list(models)

        def conflict_figs(rows: list[int]) -> tuple[dict[str, Any], dict[str, Any]]:
            Y = X[rows]
            multi = (Y != 0).sum(0) >= 2
            conflict = (Y > 0).any(0) & (Y < 0).any(0)
            elected = np.where(Y.sum(0) >= 0, 1.0, -1.0)
            top = {
                "conflict_coords": int(conflict.sum()),
                "multi_active_coords": int(multi.sum()),
                "conflict_fraction_active": conflict.sum() / multi.sum(),
                "conflict_fraction_all": conflict.mean(),
            }
            per = {}
            for i in rows:
                l2 = np.linalg.norm(X[i])
                cl2 = np.linalg.norm(X[i][conflict])
                ties = np.linalg.norm(X[i][np.sign(X[i]) == -elected])
                per[names[i]] = {
                    "cl2": cl2,
                    "cl2_ratio": cl2 / l2,
                    "ties_discarded_l2": ties,
                    "ties_discarded_ratio": ties / l2,
                }
            return top, per

        out: dict[str, Any] = {"numel": X.shape[1]}
        top, per = conflict_figs(list(range(len(names))))
        out.update(top)
        out["per_model"] = {
            m: {
                "l2": np.linalg.norm(X[i]),
                "l2_untrimmed": np.linalg.norm(R[i]),
                "unchanged_fraction": np.mean(R[i] == 0),
                "nonzero_fraction": np.mean(X[i] != 0),
                **per[m],
            }
            for i, m in enumerate(names)
        }
        out["per_pair"] = {}
        for i, j in combinations(range(len(names)), 2):
            cos = X[i] @ X[j] / (np.linalg.norm(X[i]) * np.linalg.norm(X[j]))
            top, per = conflict_figs([i, j])
            out["per_pair"][f"{names[i]}|{names[j]}"] = {
                "cosine": cos,
                "abs_cosine": abs(cos),
                **top,
                "per_model": per,
            }
        return out

    with np.errstate(invalid="ignore", divide="ignore"):
        return {"whole": figs(order), "tensors": {t: figs([t]) for t in order}}


def assert_close(got: dict[str, Any], want: dict[str, Any]) -> None:
    g, w = dict(flatten(got)), dict(flatten(want))
    assert set(g) == set(w)
    for k, v in w.items():
        if np.isnan(v):  # 0/0 in the reference: the library reports None
            assert g[k] is None, k
        else:
            assert g[k] == pytest.approx(float(v), rel=1e-6, abs=1e-9), k


@pytest.mark.parametrize(("density", "scope"), [(None, "tensor"), (0.3, "tensor"), (0.3, "global")])
def test_pool_analysis_matches_numpy_reference(
    tiny_models: dict[str, Path], density: float | None, scope: str
) -> None:
    models = {m: tiny_models[m] for m in ("ft_a", "ft_b", "ft_c")}
    pool = ModelPool.open(tiny_models["base"], list(models.values()))
    assert list(pool.source_names) == list(models)
    report = analyze_pool(pool, density=density, trim_scope=scope)
    ref = reference(tiny_models["base"], models, list(pool.tensor_names), density, scope)
    assert_close(report.whole_model(), ref["whole"])
    assert [r.name for r in report.tensors] == list(pool.tensor_names)
    for i, row in enumerate(report.tensors):
        assert_close(report.tensor_figures(i), ref["tensors"][row.name])
    # the sparse fine-tune really is sparse, and trimming to 30% leaves 30% (global: of the model)
    whole = report.whole_model()["per_model"]
    assert whole["ft_b"]["unchanged_fraction"] == pytest.approx(0.7, abs=0.03)
    if density is not None:
        assert whole["ft_a"]["nonzero_fraction"] == pytest.approx(0.3, abs=0.01)


def test_ties_discarded_matches_mergekit_mask(tiny_models: dict[str, Path]) -> None:
    from mergekit.merge_methods.generalized_task_arithmetic import get_mask
    from mergekit.sparsify import magnitude

    pool = ModelPool.open(tiny_models["base"], [tiny_models[m] for m in ("ft_a", "ft_b", "ft_c")])
    report = analyze_pool(pool, density=0.4, trim_scope="tensor")
    for i, row in enumerate(report.tensors):
        deltas = torch.stack(
            [magnitude(pool.task_vector(j, row.name), 0.4) for j in range(3)]
        )  # [3, *shape]
        kept = get_mask(deltas, method="sum")
        discarded = (deltas * ~kept).flatten(1).double().norm(dim=1)  # [3]
        fig = report.tensor_figures(i)["per_model"]
        for j, m in enumerate(pool.source_names):
            assert fig[m]["ties_discarded_l2"] == pytest.approx(
                float(discarded[j]), rel=1e-6, abs=1e-12
            )
            assert math.isfinite(fig[m]["l2"])
