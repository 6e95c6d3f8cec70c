"""Local task data for lm-evaluation-harness tasks: files next to the task YAML, no download.

A task YAML names :func:`local_files` as its dataset loader::

    custom_dataset: !function evomerge.judge.harness.local_files
    dataset_kwargs:
      data_files: {train: my_task.train.jsonl, test: my_task.test.jsonl}

The harness calls it with the task's metadata and ``dataset_kwargs``; the metadata's
``config_source`` (the YAML's path, set by the harness) anchors relative file names, so a
task folder can be moved or shipped as a whole. ``lm_eval --include_path FOLDER`` runs the
same task the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from evomerge.exceptions import ConfigError

__all__ = ["SUPPORTED_SUFFIXES", "bundled_tasks_dir", "local_files", "read_records"]

#: File formats :func:`local_files` reads: JSON Lines, or a JSON list of objects.
SUPPORTED_SUFFIXES = (".jsonl", ".json")


def bundled_tasks_dir() -> Path:
    """The folder of lm-eval task YAMLs (and their data) shipped inside evomerge."""
    return Path(str(resources.files("evomerge") / "data" / "lm_eval_tasks"))


def read_records(path: Path) -> list[dict[str, Any]]:
    """The objects of a ``.jsonl`` (one per line) or ``.json`` (a list) file.

    Raises ConfigError naming the file (and line) on anything else.
    """
    if path.suffix not in SUPPORTED_SUFFIXES:
        raise ConfigError(
            f"{path}: unsupported data file type {path.suffix!r}; use one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read task data: {err.strerror}") from None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except ValueError as err:
            raise ConfigError(f"{path}: invalid JSON ({err})") from None
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ConfigError(f"{path}: expected a JSON list of objects")
        return data
    rows = []
    for no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as err:
            raise ConfigError(f"{path}:{no}: invalid JSON ({err})") from None
        if not isinstance(row, dict):
            raise ConfigError(f"{path}:{no}: expected a JSON object per line")
        rows.append(row)
    return rows


def local_files(
    *, data_files: Mapping[str, str] | None = None, config_source: str | None = None, **_: Any
) -> Any:
    """A ``datasets.DatasetDict`` with one split per ``data_files`` entry, read from local files.

    Relative paths are resolved against the folder of ``config_source`` (the task YAML).
    Other keyword arguments (the task's metadata) are ignored. Raises ConfigError when a
    file is missing or malformed; never touches the network.
    """
    import datasets

    if not data_files:
        raise ConfigError(
            f"{config_source or 'lm-eval task'}: dataset_kwargs.data_files is empty; "
            "give one file per split, e.g. {test: my_task.test.jsonl}"
        )
    base = Path(config_source).parent if config_source else Path.cwd()
    splits = {}
    for split, name in data_files.items():
        path = Path(name).expanduser()
        path = path if path.is_absolute() else base / path
        rows = read_records(path)
        if not rows:
            raise ConfigError(f"{path}: split {split!r} has no records")
        splits[split] = datasets.Dataset.from_list(rows)
    return datasets.DatasetDict(splits)
