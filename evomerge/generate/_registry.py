"""Generator backends by name (a :class:`~evomerge.registry.Registry`): built-ins (``hf``,
``vllm``), :func:`register_generator`, and the ``evomerge.generators`` entry-point group.

A backend is a factory ``(cfg, *, model_path, device, trust_remote_code) -> Generator``.
An entry point names such a factory (``my_pkg.gen:build``). The registry is explicit:
nothing registers itself by being imported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from evomerge.registry import Registry

if TYPE_CHECKING:
    from evomerge.generate._config import GenerationConfig
    from evomerge.generate._protocol import Generator

logger = logging.getLogger(__name__)

__all__ = [
    "ENTRY_POINT_GROUP",
    "GENERATORS",
    "GeneratorFactory",
    "available_generators",
    "build_generator",
    "get_generator_factory",
    "register_generator",
]

ENTRY_POINT_GROUP = "evomerge.generators"

GeneratorFactory = Callable[..., "Generator"]


def _build_hf(
    cfg: GenerationConfig, *, model_path: Path, device: str, trust_remote_code: bool
) -> Generator:
    from evomerge.generate._hf import HFGenerator

    return HFGenerator.from_config(
        cfg, model_path=model_path, device=device, trust_remote_code=trust_remote_code
    )


def _build_vllm(
    cfg: GenerationConfig, *, model_path: Path, device: str, trust_remote_code: bool
) -> Generator:
    from evomerge.generate._vllm import VLLMGenerator

    return VLLMGenerator.from_config(
        cfg, model_path=model_path, device=device, trust_remote_code=trust_remote_code
    )


_BUILTIN: dict[str, GeneratorFactory] = {"hf": _build_hf, "vllm": _build_vllm}


def _check_factory(name: str, obj: object) -> GeneratorFactory:
    if not callable(obj):
        raise TypeError(
            f"generator backend {name!r} must be a factory callable, got {type(obj).__name__}"
        )
    return obj


#: Generator backends: built-ins, registered ones and ``evomerge.generators`` plugins.
GENERATORS: Registry[GeneratorFactory] = Registry(
    "generation backend", builtins=_BUILTIN, group=ENTRY_POINT_GROUP, check=_check_factory
)


def register_generator(name: str, factory: GeneratorFactory, *, replace: bool = False) -> None:
    """Register a backend factory under ``name`` (raises ValueError if taken, unless ``replace``)."""
    GENERATORS.register(name, factory, replace=replace)


def available_generators() -> list[str]:
    """Every backend name: built-ins, then registered ones, then entry points."""
    return GENERATORS.names()


def get_generator_factory(name: str) -> GeneratorFactory:
    """The factory for ``name``; an UnknownPluginError (a ConfigError) listing the choices."""
    return GENERATORS.get(name)


def build_generator(
    cfg: GenerationConfig, *, model_path: Path, device: str, trust_remote_code: bool = False
) -> Generator:
    """Build the configured backend on ``model_path`` (a HF model directory) and ``device``
    (``cpu``, ``cuda``, ``cuda:N`` or ``auto``).

    Raises ConfigError for an unknown backend or bad ``backend_options``, GenerationError
    when the backend cannot start.
    """
    factory = get_generator_factory(cfg.backend)
    logger.info("starting %s generator on %s (%s)", cfg.backend, device, model_path)
    return factory(
        cfg, model_path=Path(model_path), device=device, trust_remote_code=trust_remote_code
    )
