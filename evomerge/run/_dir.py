"""The run directory: what lives where, the stored config, and the driver's lock.

::

    RUN_DIR/
      run.yaml           the resolved run config (a resume must match it)
      study.journal      the optuna study (or study.db with storage: sqlite)
      driver.lock        held (flock) by the running driver
      judge_cache.sqlite replies of LLM judges (evomerge.judge.CACHE_FILENAME)
      baselines.json     the sources evaluated like trials (written by the demo)
      analysis/          the top-K task-vector conflict analysis
      report/            report.html and its figures
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from evomerge._yaml import load_yaml
from evomerge.atomic import DISK_ERRNOS, atomic_write, write_error
from evomerge.config import RunConfig, load_run_config
from evomerge.exceptions import ConfigError, SearchError

logger = logging.getLogger(__name__)

__all__ = [
    "ANALYSIS_DIR",
    "BASELINES_JSON",
    "MERGE_CACHE_DIR",
    "REPORT_DIR",
    "RUN_YAML",
    "check_same_run",
    "driver_lock",
    "load_run_dir_config",
    "repair_journal",
    "stored_canonical",
    "write_run_yaml",
]

RUN_YAML = "run.yaml"
BASELINES_JSON = "baselines.json"
ANALYSIS_DIR = "analysis"
REPORT_DIR = "report"
MERGE_CACHE_DIR = (
    "merge_cache"  # the merge engines' precomputations (evomerge.merge.PrecomputeCache)
)
# Fields that may differ on resume: the trial budget, how failures are retried, where and
# on how many workers it runs, what is done at the end, and the folder paths were resolved
# from. Everything that defines the search (models, space, sampler, seed, merge, objective)
# must stay the same.
_RESUMABLE_CHANGES = (
    "search.n_trials",
    "search.retries",
    "search.trial_timeout_s",
    "search.overlap_judging",  # how trials are scheduled, not what they are
    "merge.cache",
    "search.stop_after_infra_failures",
    "root",
)
_RESUMABLE_SECTIONS = ("workers.", "ray.", "analysis.")


@contextmanager
def driver_lock(run_dir: Path) -> Iterator[None]:
    """Exclusive ownership of ``run_dir`` for one driver; released when the process dies."""
    path = Path(run_dir) / "driver.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        if err.errno in DISK_ERRNOS:
            raise write_error(err, run_dir, what="the run directory's lock") from err
        raise
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = Path(path).read_text().strip() or "?"
            raise SearchError(
                f"another evomerge search (pid {other}) is running on {run_dir}; wait for it or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)  # closing releases the lock


def repair_journal(path: Path) -> None:
    """Make a journal written by a killed driver appendable again (call under the lock).

    Drops a partially written last line (the driver died mid-write; that operation never
    happened) and removes a lock file left behind by the dead process.
    """
    lock = Path(f"{path}.lock")
    if lock.is_symlink() or lock.exists():
        lock.unlink()
        logger.warning("removed a stale journal lock %s left by a dead driver", lock)
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        with open(path, "r+b") as f:
            f.truncate(keep)
        logger.warning("dropped a partial last line (%d bytes) from %s", len(data) - keep, path)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, Mapping):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): data}


_NO_DEFAULT = object()


def _default_of(key: str) -> Any:
    """The JSON value a RunConfig field (dotted ``key``) takes when not given, or
    ``_NO_DEFAULT`` (required, or not a field of nested sections)."""
    head, *rest = key.split(".")
    field = RunConfig.model_fields.get(head)
    if field is None or field.is_required():
        return _NO_DEFAULT
    value: Any = field.get_default(call_default_factory=True)
    for part in rest:
        if not hasattr(value, "model_fields") or part not in type(value).model_fields:
            return _NO_DEFAULT
        value = getattr(value, part)
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def check_same_run(stored: Mapping[str, Any], current: Mapping[str, Any], *, run_dir: Path) -> None:
    """Refuse to resume a search with a different definition.

    Only the budget (``search.n_trials``), ``search.retries``/``trial_timeout_s``/
    ``overlap_judging`` and the runtime sections (``workers``, ``ray``, ``analysis``) may
    change. A field the stored config lacks (written before the field existed, e.g.
    ``search.pruning``) is the same when the current value is the field's default.

    Raises ConfigError listing every differing field with both values.
    """
    a, b = _flatten(stored), _flatten(current)
    diffs = [
        k
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
        and not (k not in a and k in b and b[k] == _default_of(k))
        and k not in _RESUMABLE_CHANGES
        and not k.startswith(_RESUMABLE_SECTIONS)
    ]
    if diffs:
        lines = [
            f"  {k}: {a.get(k, '<unset>')!r} (run dir) != {b.get(k, '<unset>')!r} (now)"
            for k in diffs[:20]
        ]
        more = f"\n  ... and {len(diffs) - 20} more" if len(diffs) > 20 else ""
        raise ConfigError(
            f"{run_dir / RUN_YAML}: the run directory holds a search with a different config; "
            "use another --run-dir, or restore these fields (search.n_trials, retries, workers, ray and "
            "analysis may change):\n" + "\n".join(lines) + more
        )


def write_run_yaml(run_dir: Path, config: RunConfig) -> None:
    """Write ``run.yaml`` atomically (the resolved config, absolute paths)."""
    atomic_write(Path(run_dir) / RUN_YAML, yaml.safe_dump(config.canonical(), sort_keys=False))


def load_run_dir_config(run_dir: Path) -> RunConfig:
    """The config stored in ``run_dir``; a ConfigError when it is not a run directory."""
    path = Path(run_dir) / RUN_YAML
    if not path.exists():
        raise ConfigError(f"{run_dir} is not a search run directory: {RUN_YAML} is missing")
    return load_run_config(path)


def stored_canonical(run_dir: Path) -> dict[str, Any] | None:
    """The raw mapping of ``run.yaml`` (compared on resume), or None when there is none."""
    path = Path(run_dir) / RUN_YAML
    if not path.exists():
        return None
    data = load_yaml(path)
    return dict(data) if isinstance(data, Mapping) else None
