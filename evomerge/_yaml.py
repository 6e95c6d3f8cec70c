"""Loading YAML into pydantic models with errors that name the file and every bad field."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from evomerge.exceptions import ConfigError

__all__ = ["format_validation_error", "load_yaml", "load_yaml_model", "validate_model"]

M = TypeVar("M", bound=BaseModel)


def format_validation_error(source: str, err: ValidationError) -> str:
    """One line per invalid field: ``file: field.path: message (got value)``."""
    lines = [f"{source}: {err.error_count()} invalid field(s)"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        got = e.get("input")
        shown = repr(got) if not isinstance(got, Mapping) or len(repr(got)) < 120 else "{...}"
        lines.append(f"  {loc}: {e['msg']} (got {shown})")
    return "\n".join(lines)


def load_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a missing file or bad syntax is a ConfigError naming the file."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None


def validate_model(
    cls: type[M], data: Any, *, source: str, context: dict[str, Any] | None = None
) -> M:
    """``cls.model_validate(data)`` with every error reported at once, naming ``source``."""
    try:
        return cls.model_validate(data, context=context)
    except ValidationError as err:
        raise ConfigError(format_validation_error(source, err)) from None


def load_yaml_model(cls: type[M], path: str | Path, *, context: dict[str, Any] | None = None) -> M:
    """Load and validate a YAML file into ``cls``."""
    return validate_model(cls, load_yaml(path), source=str(path), context=context)
