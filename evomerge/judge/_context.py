"""What a judge factory is given besides its options; and options parsing with good errors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from evomerge._yaml import validate_model

__all__ = ["JudgeContext", "parse_options"]

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class JudgeContext:
    """Passed to every judge factory: ``factory(*, name, options, context) -> Judge``.

    ``source`` names where the options came from (for errors, e.g. ``run.yaml:
    judging.judges.style.options``); ``base_dir`` resolves relative paths in options;
    ``run_dir`` is where judges may keep state (the LLM reply cache).
    """

    source: str = "<judge options>"
    base_dir: Path | None = None
    run_dir: Path | None = None
    progress: bool = False

    def resolve(self, path: str | Path) -> Path:
        """``path`` made absolute against ``base_dir`` (when given and the path is relative)."""
        p = Path(path).expanduser()
        return p if p.is_absolute() or self.base_dir is None else self.base_dir / p


def parse_options(cls: type[M], options: Mapping[str, Any], context: JudgeContext) -> M:
    """Validate a judge's options; a ConfigError names ``context.source`` and every bad field."""
    return validate_model(cls, dict(options), source=context.source)
