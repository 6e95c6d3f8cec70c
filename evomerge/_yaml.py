"""Reading input files: text (UTF-8, encoding errors named), YAML into pydantic models, with
errors that name the file and every bad field."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from evomerge.exceptions import ConfigError

__all__ = ["format_validation_error", "load_yaml", "load_yaml_model", "read_text", "validate_model"]

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


def read_text(path: str | Path, *, what: str = "the file") -> str:
    """The text of a UTF-8 file (a leading byte-order mark is dropped).

    Raises ConfigError naming the file when it cannot be read, and, when it is not UTF-8,
    naming the line and column of the first bad byte and how to convert the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read {what}: {err.strerror}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise ConfigError(
            f"{path}:{line}:{column}: not UTF-8 text (byte 0x{data[err.start]:02x}); save {what} "
            f"as UTF-8, e.g. iconv -f SHIFT_JIS -t UTF-8 {path.name} > utf8-{path.name}"
        ) from None


def load_yaml(path: str | Path) -> Any:
    """Parse a YAML file; a missing or non-UTF-8 file or bad syntax is a ConfigError naming
    the file."""
    path = Path(path)
    text = read_text(path)
    try:
        return yaml.safe_load(text)
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
