"""A run's Optuna study on disk: storage, opening it, and recovery after a crash.

The driver is the only process that writes the study (:func:`make_driver_storage`);
everyone else reads it with :func:`make_storage`. What the study keeps is listed in
:mod:`evomerge.run.attrs`.

``n_trials`` counts finished trials: COMPLETE plus FAIL (after retries), not interrupted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from evomerge.atomic import DISK_ERRNOS, write_error
from evomerge.exceptions import SearchError
from evomerge.run import attrs as A

logger = logging.getLogger(__name__)

__all__ = [
    "INTERRUPTED_ERROR",
    "DriverJournalBackend",
    "count_finished",
    "is_finished",
    "make_driver_storage",
    "make_storage",
    "open_study",
    "recover_interrupted",
    "storage_path",
]

INTERRUPTED_ERROR = "driver died / interrupted"


def storage_path(run_dir: Path, kind: str) -> Path:
    return Path(run_dir) / ("study.journal" if kind == "journal" else "study.db")


class DriverJournalBackend(JournalFileBackend):
    """The driver's journal backend: appends without optuna's lock file and fsyncs once per
    :meth:`commit` instead of once per operation (asking a trial writes one operation per
    genome dimension). Only for the single writer that holds the run's driver lock.

    An appended line is visible to readers at once and survives the process being killed;
    only an OS crash can lose what was appended since the last commit. Readers use the
    plain :class:`JournalFileBackend` on the same file. A write that fails (disk full,
    read-only file system) is cut back off, so no partial line is left, and raises a
    one-line :class:`~evomerge.exceptions.WriteError`; what was written before is kept.
    """

    def __init__(self, file_path: str) -> None:
        super().__init__(file_path)
        self._path = file_path
        self._dirty = False

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs).encode(
            "utf-8"
        )
        try:
            fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError as err:
            raise _journal_error(err, self._path) from err
        try:
            start = os.fstat(fd).st_size
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError as err:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)  # no partial line (freeing space always works)
            raise _journal_error(err, self._path) from err
        finally:
            os.close(fd)
        self._dirty = True

    def commit(self) -> None:
        """Make every appended operation durable (one fsync)."""
        if self._dirty:
            fd = os.open(self._path, os.O_RDONLY)
            try:
                os.fsync(fd)
            except OSError as err:
                raise _journal_error(err, self._path) from err
            finally:
                os.close(fd)
            self._dirty = False


def _journal_error(err: OSError, path: str) -> OSError:
    if err.errno not in DISK_ERRNOS:
        return err
    out = write_error(err, path, what="the study journal")
    out.strerror = f"{out}; every trial told before is kept"
    return out


def make_storage(run_dir: Path, kind: str) -> BaseStorage:
    """The run's storage for readers: a journal file (default) or SQLite under ``run_dir``."""
    path = storage_path(run_dir, kind)
    if kind == "journal":
        return JournalStorage(JournalFileBackend(str(path)))
    if kind == "sqlite":
        return optuna.storages.RDBStorage(f"sqlite:///{path}")
    raise SearchError(f"Unknown storage {kind!r}. Available: journal, sqlite")


def make_driver_storage(run_dir: Path, kind: str) -> tuple[BaseStorage, Callable[[], None]]:
    """The driver's storage and its ``commit`` (call it after each batch of writes).

    Journal: :class:`DriverJournalBackend` (one fsync per commit). SQLite commits every
    operation itself; its ``commit`` does nothing.
    """
    if kind == "journal":
        backend = DriverJournalBackend(str(storage_path(run_dir, kind)))
        return JournalStorage(backend), backend.commit
    return make_storage(run_dir, kind), lambda: None


def open_study(
    *,
    storage: BaseStorage,
    study_name: str,
    sampler: optuna.samplers.BaseSampler,
    directions: Sequence[str],
) -> tuple[optuna.Study, bool]:
    """Create the study, or load it if it exists (then its directions must match).

    Returns ``(study, created)``.
    """
    try:
        storage.get_study_id_from_name(study_name)
        exists = True
    except KeyError:
        exists = False
    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        sampler=sampler,
        directions=[optuna.study.StudyDirection[d.upper()] for d in directions],
        load_if_exists=True,
    )
    stored = [d.name.lower() for d in study.directions]
    if stored != [d.lower() for d in directions]:
        raise SearchError(
            f"the run directory's study optimizes {stored}, the objective now gives {list(directions)}; "
            "use a new run directory for different objectives"
        )
    return study, not exists


def is_finished(t: FrozenTrial) -> bool:
    """A trial that counts toward ``n_trials``: COMPLETE, PRUNED (stopped early by
    ``search.pruning``), or FAIL and not interrupted."""
    if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return t.state == TrialState.FAIL and not t.user_attrs.get(A.INTERRUPTED, False)


def count_finished(study: optuna.Study) -> tuple[int, int]:
    """``(n_complete, n_failed)``; interrupted trials are not counted, nor pruned ones
    (:meth:`StudyView.counts` has every state; its ``finished`` includes pruned trials)."""
    trials = study.get_trials(deepcopy=False)
    n_complete = sum(t.state == TrialState.COMPLETE for t in trials)
    n_failed = sum(t.state == TrialState.FAIL and is_finished(t) for t in trials)
    return n_complete, n_failed


def recover_interrupted(
    study: optuna.Study,
    storage: BaseStorage,
    *,
    error: str = INTERRUPTED_ERROR,
    trial_numbers: Sequence[int] | None = None,
) -> int:
    """Mark RUNNING trials FAIL ``interrupted`` and re-enqueue their parameters.

    ``storage`` is the study's (the driver's) storage. Only the given ``trial_numbers``
    when set (the driver's own in-flight trials at Ctrl-C), else every RUNNING trial (left
    by a dead driver). The parameters are enqueued before the trial is marked failed, and
    never twice, so a crash in between loses nothing. Returns the number recovered.
    """
    study_id = storage.get_study_id_from_name(study.study_name)
    trials = study.get_trials(deepcopy=False)
    waiting_for = {t.user_attrs.get(A.RETRY_OF) for t in trials if t.state == TrialState.WAITING}
    recovered = 0
    for t in trials:
        if t.state != TrialState.RUNNING or (
            trial_numbers is not None and t.number not in trial_numbers
        ):
            continue
        if t.params and t.number not in waiting_for:
            attrs: dict[str, Any] = {A.RETRY_OF: t.number}
            if A.START_POINT in t.user_attrs:
                attrs[A.START_POINT] = True
            study.enqueue_trial(t.params, user_attrs=attrs, skip_if_exists=False)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_user_attr(trial_id, A.ERROR, error)
        storage.set_trial_user_attr(trial_id, A.INTERRUPTED, True)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
        recovered += 1
    if recovered:
        logger.warning(
            "marked %d interrupted trial(s) failed and re-enqueued their parameters", recovered
        )
    return recovered
