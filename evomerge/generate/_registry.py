"""Generator backends by name: built-ins (``hf``, ``vllm``) plus the ``evomerge.generators``
entry-point group.

A backend is a factory ``(cfg, *, model_path, device, trust_remote_code) -> Generator``.
An entry point names such a factory (``my_pkg.gen:build``). The registry is explicit:
nothing registers itself by being imported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evomerge.exceptions import ConfigError

if TYPE_CHECKING:
    from evomerge.generate._config import GenerationConfig
    from evomerge.generate._protocol import Generator

logger = logging.getLogger(__name__)

__all__ = [
    "ENTRY_POINT_GROUP",
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
_REGISTERED: dict[str, GeneratorFactory] = {}


def register_generator(name: str, factory: GeneratorFactory, *, overwrite: bool = False) -> None:
    """Register a backend factory under ``name`` (raises ValueError if taken, unless ``overwrite``)."""
    if not overwrite and name in available_generators():
        raise ValueError(
            f"generator backend {name!r} is already registered; pass overwrite=True to replace it"
        )
    _REGISTERED[name] = factory


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_generators() -> list[str]:
    """Every backend name: built-ins, then registered ones, then entry points."""
    names = list(_BUILTIN)
    names += [n for n in _REGISTERED if n not in names]
    names += [n for n in sorted(_entry_points()) if n not in names]
    return names


def get_generator_factory(name: str) -> GeneratorFactory:
    """The factory for ``name``; ConfigError listing the choices if unknown."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name in _BUILTIN:
        return _BUILTIN[name]
    eps = _entry_points()
    if name in eps:
        factory = eps[name].load()
        if not callable(factory):
            raise ConfigError(
                f"entry point {ENTRY_POINT_GROUP}:{name} = {eps[name].value} is not callable"
            )
        return factory
    raise ConfigError(
        f"Unknown generation backend {name!r}. Available: {', '.join(available_generators())}"
    )


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
