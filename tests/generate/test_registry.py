"""Backend registry: built-ins, explicit registration, entry points, errors listing choices."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evomerge.exceptions import ConfigError
from evomerge.generate import (
    ENTRY_POINT_GROUP,
    GENERATORS,
    GenerationConfig,
    HFGenerator,
    available_generators,
    build_generator,
    get_generator_factory,
    register_generator,
)
from evomerge.testing.generation import FakeGenerator


@pytest.fixture
def clean_registry() -> Iterator[None]:
    before = set(GENERATORS.names())
    yield
    for name in set(GENERATORS.names()) - before:
        GENERATORS.unregister(name)


def test_builtins_and_unknown_lists_choices() -> None:
    assert available_generators()[:2] == ["hf", "vllm"]
    with pytest.raises(ConfigError, match=r"Unknown generation backend 'hff'. Available: hf, vllm"):
        get_generator_factory("hff")


def test_build_hf_from_config(tiny_dir: Path, tmp_path: Path) -> None:
    cfg = GenerationConfig(prompts=tmp_path / "p.jsonl", backend_options={"score_batch_size": 2})
    gen = build_generator(cfg, model_path=tiny_dir, device="cpu")
    assert isinstance(gen, HFGenerator)
    with pytest.raises(ConfigError, match=r"backend_options \(hf\)"):
        build_generator(
            cfg.model_copy(update={"backend_options": {"batch": 1}}),
            model_path=tiny_dir,
            device="cpu",
        )


def test_register_custom_backend(clean_registry: None, tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def factory(
        cfg: GenerationConfig, *, model_path: Path, device: str, trust_remote_code: bool
    ) -> FakeGenerator:
        seen.update(model_path=model_path, device=device, trust=trust_remote_code)
        return FakeGenerator()

    register_generator("fake", factory)
    with pytest.raises(ValueError, match="already registered"):
        register_generator("fake", factory)
    cfg = GenerationConfig(prompts=tmp_path / "p.jsonl", backend="fake")
    assert isinstance(build_generator(cfg, model_path=tmp_path, device="cpu"), FakeGenerator)
    assert seen == {"model_path": tmp_path, "device": "cpu", "trust": False}


def test_entry_point_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real installed-distribution layout on sys.path, found by importlib.metadata.
    dist = tmp_path / "evomerge_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: evomerge-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nplugged = evomerge_plugin_mod:make_fake\n"
    )
    (tmp_path / "evomerge_plugin_mod.py").write_text(
        "from evomerge.testing.generation import FakeGenerator\n\n"
        "def make_fake(cfg, **kwargs):\n    return FakeGenerator(answers={'q': 'from entry point'})\n"
    )
    monkeypatch.delitem(sys.modules, "evomerge_plugin_mod", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "plugged" in available_generators()
    cfg = GenerationConfig(
        prompts=tmp_path / "p.jsonl", backend="plugged"
    )  # validates against the registry
    assert "evomerge_plugin_mod" not in sys.modules  # listing does not import plugins
    gen = build_generator(cfg, model_path=tmp_path, device="cpu")
    assert isinstance(gen, FakeGenerator) and gen.answers == {"q": "from entry point"}
    assert "evomerge_plugin_mod" in sys.modules
