"""Fixtures for the merge tests: one extra model, the mergekit oracle, pools and engines."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

Tensors = dict[str, torch.Tensor]


@pytest.fixture(scope="session")
def far_model(tiny_models: Any) -> Path:
    """A fine-tune far from the base (noise = 0.5 x std), so slerp takes its spherical branch."""
    from evomerge.testing.tiny import perturb_model

    return perturb_model(tiny_models.base, Path(tiny_models.root) / "ft_far", seed=5, scale=0.5)


@pytest.fixture(scope="session")
def mergekit_merge(tmp_path_factory: pytest.TempPathFactory) -> Callable[[dict[str, Any]], Tensors]:
    """Run mergekit 0.1.5 in-process on a config dict; results cached per config for the session.

    Vocabulary differences are handled as our pool does (``unsafe_truncate_embeddings``).
    """
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions
    from safetensors.torch import load_file

    cache: dict[str, Tensors] = {}
    root = tmp_path_factory.mktemp("mergekit_out")
    options = MergeOptions(
        cuda=False,
        copy_tokenizer=False,
        lazy_unpickle=False,
        unsafe_truncate_embeddings=True,
        write_model_card=False,
        quiet=True,
        lora_merge_cache=str(root / "lora_cache"),
    )

    def run(config: dict[str, Any]) -> Tensors:
        key = yaml.safe_dump(config, sort_keys=True)
        if key not in cache:
            out = root / f"m{len(cache)}"
            level = logging.getLogger().level
            run_merge(MergeConfiguration.model_validate(config), str(out), options)
            logging.getLogger().setLevel(level)  # mergekit reconfigures the root logger
            tensors: Tensors = {}
            for f in sorted(out.glob("*.safetensors")):
                tensors.update(load_file(str(f)))
            cache[key] = tensors
        return cache[key]

    return run


def _ulp_finetune(base_dir: Path, out_dir: Path, *, seed: int, fraction: float) -> Path:
    """A bf16 "fine-tune" that moves ``fraction`` of the coordinates by exactly one bf16 ulp,
    up or down: its task vector's magnitudes are powers of two, so they tie massively."""
    import shutil

    from safetensors.torch import load_file, save_file

    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(base_dir, out_dir)
    gen = torch.Generator().manual_seed(seed)
    for f in sorted(out_dir.glob("*.safetensors")):
        tensors = load_file(str(f))
        new = {}
        for name, t in tensors.items():
            up = torch.full_like(t, float("inf"))
            step = torch.nextafter(
                t, torch.where(torch.rand(t.shape, generator=gen) < 0.5, up, -up)
            )
            moved = torch.rand(t.shape, generator=gen) < fraction
            new[name] = torch.where(moved, step, t).contiguous()
        save_file(new, str(f), metadata={"format": "pt"})
    return out_dir


@pytest.fixture(scope="session")
def bf16_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A bf16 family stored as real fine-tunes are: sharded safetensors (about 4 shards).

    ``base``; ``ulp``: 40% of coordinates moved by one bf16 ulp (deliberate ties at every
    cut); ``dense``: every coordinate moved (bf16-quantized task vector, 2% of the std);
    ``sparse``: 30% of coordinates moved.
    """
    from evomerge.testing.tiny import build_tiny_model, perturb_model

    root = tmp_path_factory.mktemp("bf16_models")
    base = build_tiny_model(root / "base", seed=20, dtype=torch.bfloat16, max_shard_size="30KB")
    return {
        "base": base,
        "ulp": _ulp_finetune(base, root / "ulp", seed=21, fraction=0.4),
        "dense": perturb_model(base, root / "dense", seed=22),
        "sparse": perturb_model(base, root / "sparse", seed=23, fraction=0.3),
    }
