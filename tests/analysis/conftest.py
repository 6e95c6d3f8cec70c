"""Tiny models for the analysis tests, built once per session."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from evomerge.testing.tiny import build_lora_adapter, build_tiny_model, perturb_model


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A base and three fine-tunes: dense, sparse (30% of coordinates, DPO-like), dense."""
    root = tmp_path_factory.mktemp("analysis_models")
    base = build_tiny_model(root / "base", seed=0, num_layers=3)
    return {
        "base": base,
        "ft_a": perturb_model(base, root / "ft_a", seed=1),
        "ft_b": perturb_model(base, root / "ft_b", seed=2, fraction=0.3),
        "ft_c": perturb_model(base, root / "ft_c", seed=3, scale=0.05, skip=("norm",)),
    }


def merge_lora_into_full(base: Path, adapter: Path, out: Path) -> Path:
    """Write base + B @ A * (alpha / r) as a full checkpoint (independent of evomerge.pool)."""
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    scale = cfg["lora_alpha"] / cfg["r"]
    lora = load_file(str(adapter / "adapter_model.safetensors"))
    shutil.copytree(base, out)
    for f in sorted(out.glob("*.safetensors")):
        tensors = load_file(str(f))
        for name in list(tensors):
            a_key = f"base_model.model.{name[: -len('.weight')]}.lora_A.weight"
            if a_key in lora:
                b = lora[a_key.replace("lora_A", "lora_B")]
                tensors[name] = (tensors[name].float() + (b @ lora[a_key]) * scale).to(
                    tensors[name].dtype
                )
        save_file(tensors, str(f), metadata={"format": "pt"})
    return out


@pytest.fixture(scope="session")
def lora_models(
    tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Two LoRA adapters (overlapping targets) and their merged full-weight equivalents, named a and b."""
    root = tmp_path_factory.mktemp("analysis_lora")
    base = tiny_models["base"]
    lora_a = build_lora_adapter(
        base, root / "lora" / "a", seed=11, rank=4, target_modules=("q_proj", "v_proj")
    )
    lora_b = build_lora_adapter(
        base,
        root / "lora" / "b",
        seed=12,
        rank=2,
        alpha=4.0,
        target_modules=("v_proj", "o_proj", "up_proj"),
    )
    return {
        "lora_a": lora_a,
        "lora_b": lora_b,
        "full_a": merge_lora_into_full(base, lora_a, root / "full" / "a"),
        "full_b": merge_lora_into_full(base, lora_b, root / "full" / "b"),
    }
