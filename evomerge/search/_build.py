"""Trial evaluators by name: the registry, and building a worker's evaluator from the config.

``evaluator.factory`` in run.yaml is a registered name (built-in: ``pipeline``, the
generate-and-judge evaluator used when there is no ``evaluator:`` section; plug-ins: the
``evomerge.evaluators`` entry-point group, or :func:`register_evaluator`) or a
``"package.module:callable"`` path. A factory is called as
``factory(config, *, device, worker_index, run_dir, **options)`` and returns a
:class:`TrialEvaluator`.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evomerge.config import RunConfig
from evomerge.exceptions import ConfigError
from evomerge.registry import Registry
from evomerge.search._pipeline import build_pipeline_evaluator
from evomerge.search._types import TrialEvaluator

logger = logging.getLogger(__name__)

__all__ = [
    "ENTRY_POINT_GROUP",
    "EVALUATORS",
    "EvaluatorFactory",
    "build_evaluator",
    "get_evaluator_factory",
    "register_evaluator",
]

ENTRY_POINT_GROUP = "evomerge.evaluators"
EvaluatorFactory = Callable[..., TrialEvaluator]

#: The evaluator used when a run config has no ``evaluator:`` section.
DEFAULT_EVALUATOR = "pipeline"


def _check(name: str, obj: object) -> EvaluatorFactory:
    if not callable(obj):
        raise TypeError(f"evaluator {name!r} must be a callable factory, got {type(obj).__name__}")
    return obj


EVALUATORS: Registry[EvaluatorFactory] = Registry(
    "evaluator",
    builtins={DEFAULT_EVALUATOR: build_pipeline_evaluator},
    group=ENTRY_POINT_GROUP,
    check=_check,
    hint="Or give a 'package.module:callable' path.",
)


def register_evaluator(name: str, factory: EvaluatorFactory, *, replace: bool = False) -> None:
    """Make ``evaluator: {factory: name}`` use ``factory`` in this process."""
    EVALUATORS.register(name, factory, replace=replace)


def get_evaluator_factory(spec: str) -> EvaluatorFactory:
    """A registered name, or ``"package.module:callable"`` imported; a ConfigError says what
    is missing (an unknown name lists the registered ones)."""
    if ":" not in spec:
        try:
            return EVALUATORS.get(spec)
        except ConfigError as err:
            raise ConfigError(f"evaluator.factory: {err}") from None
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(
            f"evaluator.factory: cannot import module {module_name!r} ({err})"
        ) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"evaluator.factory: {module_name!r} has no callable {attr!r}")
    return factory


def build_evaluator(
    config: RunConfig, *, device: str, worker_index: int, run_dir: Path
) -> TrialEvaluator:
    """The worker's evaluator: ``config.evaluator``'s factory, or the ``pipeline`` one."""
    spec = config.evaluator.factory if config.evaluator is not None else DEFAULT_EVALUATOR
    options: dict[str, Any] = dict(config.evaluator.options) if config.evaluator is not None else {}
    factory = get_evaluator_factory(spec)
    evaluator = factory(
        config, device=device, worker_index=worker_index, run_dir=run_dir, **options
    )
    names, directions = list(evaluator.objective_names), list(evaluator.directions)
    bad = [d for d in directions if d not in ("maximize", "minimize")]
    if not names or len(names) != len(directions) or bad:
        raise ConfigError(
            f"evaluator {spec}: needs one direction ('maximize'|'minimize') per objective, "
            f"got names={names}, directions={directions}"
        )
    return evaluator
