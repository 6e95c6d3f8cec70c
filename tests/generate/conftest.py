"""Tiny models shared by the generation tests (built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from evomerge.testing.tiny import build_tiny_model, perturb_model


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("gen") / "base", seed=0)


@pytest.fixture(scope="session")
def perturbed_dir(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return perturb_model(tiny_dir, tmp_path_factory.mktemp("gen") / "perturbed", seed=1, scale=0.5)


@pytest.fixture(scope="session")
def tied_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(
        tmp_path_factory.mktemp("gen") / "tied", seed=3, tie_word_embeddings=True
    )
