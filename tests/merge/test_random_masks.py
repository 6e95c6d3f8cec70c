"""DARE and DELLA drop masks: independent per source and per tensor, and like mergekit's.

mergekit 0.1.5 draws a fresh Bernoulli mask for every source and every tensor; evomerge
draws them from a per-study seed keyed by (tensor, source), so a recipe always gives the
same model. These tests look at the joint behaviour, which a shared mask would break:

- the same fine-tune listed twice (two copies, in directories of the same name): each
  coordinate of ``merged - base`` is 0, 1 or 2 times the task vector, with the binomial
  frequencies (a shared mask gives only 0 and 2);
- two same-shaped tensors agree on a coordinate's fate only by chance;
- two sources with disjoint supports: each keeps its own density, and with rescale each
  keeps its task vector's L1 norm exactly, as mergekit does;
- the four random methods against mergekit, statistically (fractions and norms).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from evomerge.merge import MergeEngine, MergeRecipe, iter_merged_tensors, pool_for_recipe
from evomerge.merge.methods import row_rank

Tensors = dict[str, torch.Tensor]
RANDOM = ("dare_linear", "dare_ties", "della", "della_linear")
BIG = 1000  # tensors at least this large enter the statistics (norms are too short)


def _read(model: Path) -> Tensors:
    out: Tensors = {}
    for f in sorted(model.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def _five_sigma(p: float, n: int) -> float:
    return 5 * math.sqrt(max(p * (1 - p), 1e-12) / n)


@pytest.fixture(scope="module")
def twins(tiny_models: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """ft_a copied to x/ft and y/ft: one fine-tune, two sources whose directories share a name."""
    root = tmp_path_factory.mktemp("twins")
    for side in ("x", "y"):
        shutil.copytree(tiny_models.ft_a, root / side / "ft")
    return {"base": tiny_models.base, "x": root / "x" / "ft", "y": root / "y" / "ft"}


@pytest.fixture(scope="module")
def halves(tiny_models: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two fine-tunes with disjoint supports: ``even`` moves even flat positions, ``odd`` odd ones."""
    root = tmp_path_factory.mktemp("halves")
    base = _read(tiny_models.base)
    out = {"base": tiny_models.base}
    for name, src, parity in (("even", tiny_models.ft_a, 0), ("odd", tiny_models.ft_b, 1)):
        shutil.copytree(src, root / name)
        ft = _read(src)
        new = {}
        for key, t in ft.items():
            flat = t.reshape(-1).clone()
            keep_base = torch.arange(flat.numel()) % 2 != parity
            flat[keep_base] = base[key].reshape(-1)[keep_base]
            new[key] = flat.view(t.shape)
        for f in (root / name).glob("*.safetensors"):
            f.unlink()
        save_file(new, str(root / name / "model.safetensors"), metadata={"format": "pt"})
        out[name] = root / name
    return out


def _recipe(
    method: str, paths: dict[str, Path], models: list[tuple[str, dict]], **glob: Any
) -> MergeRecipe:
    return MergeRecipe.from_mergekit_dict(
        {
            "merge_method": method,
            "base_model": str(paths["base"]),
            "models": [{"model": str(paths[m]), "parameters": p} for m, p in models],
            "parameters": glob,
            "dtype": "float32",
        }
    )


def _multiples(merged: Tensors, base: Tensors, tau: Tensors) -> torch.Tensor:
    """``(merged - base) / tau`` over every big tensor, rounded; checks they are integers."""
    out = []
    for name, t in merged.items():
        if t.numel() < BIG:
            continue
        ratio = ((t - base[name]) / tau[name]).reshape(-1)
        rounded = ratio.round()
        assert (ratio - rounded).abs().max() < 1e-2, name
        out.append(rounded)
    return torch.cat(out)


@pytest.mark.parametrize("method", RANDOM)
def test_one_fine_tune_listed_twice_draws_two_independent_masks(
    method: str, twins: dict[str, Path]
) -> None:
    params = {"weight": 1.0, "density": 0.5} | ({"epsilon": 0.3} if "della" in method else {})
    recipe = _recipe(method, twins, [("x", params), ("y", params)], rescale=False, normalize=False)
    pool = pool_for_recipe(recipe)
    base, ft = _read(twins["base"]), _read(twins["x"])
    tau = {n: ft[n] - base[n] for n in base}
    engine = MergeEngine(pool, methods=[method], seed=7)
    for merged in (dict(iter_merged_tensors(recipe, pool, seed=7)), engine.materialize(recipe)):
        m = _multiples(merged, base, tau)
        n = m.numel()
        freq = [float((m == k).float().mean()) for k in (0, 1, 2)]
        if "della" in method:  # keep probability p = 0.2 + 0.6 * rank / (row - 1), per coordinate
            p = torch.cat(
                [
                    0.2 + 0.6 * row_rank(tau[k]).float() / (max(tau[k].shape[-1], 2) - 1)
                    if tau[k].dim() > 1
                    else torch.full((tau[k].numel(),), 0.5)
                    for k in merged
                    if merged[k].numel() >= BIG
                ]
            )
            expected = [
                float(((1 - p) ** 2).mean()),
                float((2 * p * (1 - p)).mean()),
                float((p**2).mean()),
            ]
        else:
            expected = [0.25, 0.5, 0.25]
        for got, want in zip(freq, expected, strict=True):
            assert abs(got - want) < _five_sigma(want, n), (freq, expected)


def test_same_shaped_tensors_do_not_share_a_mask(tiny_models: Any) -> None:
    paths = {"base": tiny_models.base, "a": tiny_models.ft_a}
    recipe = _recipe("dare_linear", paths, [("a", {"weight": 1.0, "density": 0.5})], rescale=False)
    merged = dict(iter_merged_tensors(recipe, pool_for_recipe(recipe), seed=3))
    base = _read(tiny_models.base)
    kept = {n: (t != base[n]) for n, t in merged.items()}
    pairs = [
        ("model.layers.0.mlp.up_proj.weight", "model.layers.1.mlp.up_proj.weight"),
        ("model.layers.2.mlp.up_proj.weight", "model.layers.2.mlp.gate_proj.weight"),
        ("model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.o_proj.weight"),
    ]
    for a, b in pairs:
        assert kept[a].shape == kept[b].shape
        agree = float((kept[a] == kept[b]).float().mean())  # 0.5 by chance, 1 if shared
        assert abs(agree - 0.5) < _five_sigma(0.5, kept[a].numel()), (a, b, agree)


@pytest.fixture(scope="module")
def halves_config(halves: dict[str, Path]) -> Callable[[str], dict[str, Any]]:
    def config(method: str) -> dict[str, Any]:
        extra = {"epsilon": 0.2} if "della" in method else {}
        return {
            "merge_method": method,
            "base_model": str(halves["base"]),
            "models": [
                {
                    "model": str(halves["even"]),
                    "parameters": {"weight": 0.7, "density": 0.3, **extra},
                },
                {
                    "model": str(halves["odd"]),
                    "parameters": {"weight": 0.4, "density": 0.6, **extra},
                },
            ],
            "parameters": {"rescale": True, "normalize": False},
            "dtype": "float32",
        }

    return config


@pytest.mark.parametrize("method", RANDOM)
def test_each_source_keeps_its_density_and_l1_norm_like_mergekit(
    method: str,
    halves: dict[str, Path],
    halves_config: Callable[[str], dict[str, Any]],
    mergekit_merge: Callable[[dict[str, Any]], Tensors],
) -> None:
    """Disjoint supports separate the sources in the merged model: per source, the kept
    fraction is its density and the kept L1 norm is ``weight * |tau|_1`` (rescale), for
    evomerge (streaming and engine) and for mergekit alike."""
    config = halves_config(method)
    recipe = MergeRecipe.from_mergekit_dict(config)
    pool = pool_for_recipe(recipe)
    base = _read(halves["base"])
    taus = {k: {n: t - base[n] for n, t in _read(halves[k]).items()} for k in ("even", "odd")}
    results = {
        "mergekit": mergekit_merge(config),
        "streaming": dict(iter_merged_tensors(recipe, pool, seed=11)),
        "engine": MergeEngine(pool, methods=[method], seed=11).materialize(recipe),
    }
    for who, merged in results.items():
        for k, parity, weight, density in (("even", 0, 0.7, 0.3), ("odd", 1, 0.4, 0.6)):
            kept = total = 0
            expected = 0.0  # sum of keep probabilities over the support
            for name, t in merged.items():
                if t.numel() < BIG:
                    continue
                pos = torch.arange(t.numel()) % 2 == parity
                delta = (t - base[name]).reshape(-1)[pos]
                tau = taus[k][name].reshape(-1)[pos]
                kept += int((delta != 0).sum())
                total += delta.numel()
                if "della" in method:  # zeros off the support take the lowest ranks of each row
                    rank = row_rank(taus[k][name]).float().reshape(-1)[pos]
                    expected += float((density - 0.2 + 0.4 * rank / (t.shape[-1] - 1)).sum())
                else:
                    expected += density * delta.numel()
                l1, want_l1 = float(delta.abs().sum()), weight * float(tau.abs().sum())
                assert l1 == pytest.approx(want_l1, rel=2e-3), (who, k, name)
            want = expected / total
            assert abs(kept / total - want) < _five_sigma(want, total), (who, k, kept / total, want)


@pytest.mark.parametrize("method", RANDOM)
def test_random_methods_match_mergekit_statistically(
    method: str, tiny_models: Any, mergekit_merge: Callable[[dict[str, Any]], Tensors]
) -> None:
    """Three overlapping sources (ft_c is sparse), default rescale/normalize: per tensor, the
    fraction of coordinates moved agrees within binomial noise, the L1 norm of the merged
    task vector within 5%."""
    extra = {"epsilon": 0.1} if "della" in method else {}
    config = {
        "merge_method": method,
        "base_model": str(tiny_models.base),
        "models": [
            {
                "model": str(tiny_models.ft_a),
                "parameters": {"weight": 0.5, "density": 0.4, **extra},
            },
            {
                "model": str(tiny_models.ft_b),
                "parameters": {"weight": 0.3, "density": 0.6, **extra},
            },
            {
                "model": str(tiny_models.ft_c),
                "parameters": {"weight": 0.6, "density": 0.5, **extra},
            },
        ],
        "dtype": "float32",
    }
    theirs = mergekit_merge(config)
    recipe = MergeRecipe.from_mergekit_dict(config)
    ours = dict(iter_merged_tensors(recipe, pool_for_recipe(recipe), seed=5))
    base = _read(tiny_models.base)
    l1_ours = l1_theirs = 0.0
    for name, t in ours.items():
        if t.numel() < BIG:
            continue
        moved_ours = float((t != base[name]).float().mean())
        moved_theirs = float((theirs[name] != base[name]).float().mean())
        assert abs(moved_ours - moved_theirs) < 2 * _five_sigma(moved_theirs, t.numel()), name
        l1_ours += float((t - base[name]).abs().sum())
        l1_theirs += float((theirs[name] - base[name]).abs().sum())
    assert l1_ours == pytest.approx(l1_theirs, rel=0.05)
