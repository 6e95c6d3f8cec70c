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
