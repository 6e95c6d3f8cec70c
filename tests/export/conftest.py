"""Tiny models shared by the export tests, built once per session."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from evomerge.testing.tiny import build_tiny_model, perturb_model


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A float32 tiny llama base and two perturbed "fine-tunes" of it."""
    root = tmp_path_factory.mktemp("export_models")
    base = build_tiny_model(root / "base", seed=0)
    return {
        "base": base,
        "ft_a": perturb_model(base, root / "ft_a", seed=1, scale=0.05),
        "ft_b": perturb_model(base, root / "ft_b", seed=2, scale=0.05),
    }


@pytest.fixture(scope="session")
def tied_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(
        tmp_path_factory.mktemp("export_tied") / "base", seed=3, tie_word_embeddings=True
    )


def _read_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


@pytest.fixture(scope="session")
def read_weights() -> Callable[[Path], dict[str, torch.Tensor]]:
    """Every tensor of a checkpoint folder, whatever its sharding."""
    return _read_weights
