"""A run directory on disk: opening it, its storage kinds, the stored config, resume rules."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from evomerge.exceptions import ConfigError, SearchError
from evomerge.run import (
    RUN_YAML,
    check_same_run,
    count_finished,
    is_finished,
    load_run_dir_config,
    make_driver_storage,
    make_storage,
    open_run,
    open_study,
    storage_path,
    stored_canonical,
    write_run_yaml,
)

C = TrialState.COMPLETE


def test_open_run_says_what_is_missing(make_run_dir: Callable[..., Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"is not a search run directory: run\.yaml is missing"):
        open_run(tmp_path)
    with pytest.raises(ConfigError, match="is not a search run directory"):
        load_run_dir_config(tmp_path)
    assert stored_canonical(tmp_path) is None
    run_dir = make_run_dir(["maximize"], [(C, [1.0])])
    config = open_run(run_dir).config
    stored = stored_canonical(run_dir)
    assert stored == yaml.safe_load((run_dir / RUN_YAML).read_text())
    assert stored is not None and stored["space"]["name"] == "linear_layerwise"  # resolved
    assert sorted(p.name for p in run_dir.iterdir()) == ["run.yaml", "study.journal"]
    (run_dir / "study.journal").rename(run_dir / "elsewhere")
    with pytest.raises(SearchError, match=r"has no study yet \(study.journal is missing\)"):
        open_run(run_dir)
    (run_dir / "elsewhere").rename(run_dir / "study.journal")
    renamed = config.model_copy(update={"name": "other"})
    write_run_yaml(run_dir, renamed)
    with pytest.raises(SearchError, match="holds no study named 'other'"):
        open_run(run_dir)


def test_stored_canonical_of_a_broken_run_yaml(tmp_path: Path) -> None:
    (tmp_path / RUN_YAML).write_text("- a list\n")
    assert stored_canonical(tmp_path) is None


def test_sqlite_storage_and_the_driver_s_journal(tmp_path: Path) -> None:
    assert storage_path(tmp_path, "journal").name == "study.journal"
    assert storage_path(tmp_path, "sqlite").name == "study.db"
    with pytest.raises(SearchError, match=r"Unknown storage 'redis'\. Available: journal, sqlite"):
        make_storage(tmp_path, "redis")
    for kind in ("sqlite", "journal"):
        storage, commit = make_driver_storage(tmp_path, kind)
        study, created = open_study(
            storage=storage,
            study_name=kind,
            sampler=optuna.samplers.RandomSampler(seed=0),
            directions=["minimize"],
        )
        assert created
        study.add_trial(optuna.trial.create_trial(value=1.0))
        commit()
        reader = optuna.load_study(study_name=kind, storage=make_storage(tmp_path, kind))
        assert [t.value for t in reader.trials] == [1.0]  # readers see the writer's trials
        _, again = open_study(
            storage=storage,
            study_name=kind,
            sampler=optuna.samplers.RandomSampler(),
            directions=["minimize"],
        )
        assert not again
    assert storage_path(tmp_path, "sqlite").exists() and storage_path(tmp_path, "journal").exists()


def test_finished_trials_exclude_the_interrupted() -> None:
    def frozen(state: TrialState, **user_attrs: Any) -> optuna.trial.FrozenTrial:
        values = [1.0] if state == C else None
        return optuna.trial.create_trial(state=state, values=values, user_attrs=user_attrs)

    assert is_finished(frozen(C)) and is_finished(frozen(TrialState.FAIL))
    assert not is_finished(frozen(TrialState.FAIL, interrupted=True))
    assert not is_finished(frozen(TrialState.RUNNING)) and not is_finished(
        frozen(TrialState.WAITING)
    )
    study = optuna.create_study()
    for t in [frozen(C), frozen(C), frozen(TrialState.FAIL)]:
        study.add_trial(t)
    study.add_trial(frozen(TrialState.FAIL, interrupted=True))
    study.enqueue_trial({})
    assert count_finished(study) == (2, 1)  # neither the interrupted nor the waiting one


def test_resumable_fields_and_a_long_list_of_differences(tmp_path: Path) -> None:
    stored = {"search": {"n_trials": 1, "retries": 0, "trial_timeout_s": None}, "root": "/a"}
    now = {"search": {"n_trials": 9, "retries": 3, "trial_timeout_s": 5.0}, "root": "/b"}
    check_same_run(
        {**stored, "workers": {"num": 1}, "ray": {"address": None}, "analysis": {"top_k": 3}},
        {**now, "workers": {"num": 4}, "ray": {"address": "h:1"}, "analysis": {"top_k": 0}},
        run_dir=tmp_path,
    )
    many_a = {f"f{i:02d}": i for i in range(25)}
    many_b = {f"f{i:02d}": -i for i in range(25)}
    with pytest.raises(ConfigError) as err:
        check_same_run(many_a, many_b, run_dir=tmp_path)
    text = str(err.value)
    assert text.startswith(f"{tmp_path / RUN_YAML}: the run directory holds a search with a")
    assert "f01: 1 (run dir) != -1 (now)" in text and "f20: 20" in text and "f21" not in text
    assert text.endswith("... and 4 more")  # f00 is equal; 24 differ, 20 are listed
    with pytest.raises(ConfigError, match=r"models\.extra: '<unset>' \(run dir\) != 1 \(now\)"):
        check_same_run({"models": {}}, {"models": {"extra": 1}}, run_dir=tmp_path)


def test_a_journal_append_that_hits_a_full_disk_leaves_no_partial_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Simulated ENOSPC in the middle of an append (the tmpfs tests need root): the half
    written line is cut back off, the error is one line naming the journal, and the study
    reads back whole."""
    import errno
    import os

    from evomerge.exceptions import WriteError

    storage, commit = make_driver_storage(tmp_path, "journal")
    study, _ = open_study(
        storage=storage,
        study_name="s",
        sampler=optuna.samplers.RandomSampler(seed=0),
        directions=["maximize"],
    )
    study.add_trial(optuna.trial.create_trial(value=1.0))
    commit()
    path = storage_path(tmp_path, "journal")
    before = path.read_bytes()
    real_write = os.write

    def half_then_full(fd: int, data: Any) -> int:
        def full(fd: int, data: Any) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "write", full)  # the disk is full from now on
        return real_write(fd, bytes(data)[: len(data) // 2])

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(WriteError) as info:
        study.add_trial(optuna.trial.create_trial(value=2.0))
    monkeypatch.undo()
    assert str(info.value).startswith(f"no space left on the device of {path}")
    assert "the study journal" in str(info.value) and "\n" not in str(info.value)
    assert info.value.errno == errno.ENOSPC
    assert path.read_bytes() == before  # no partial line
    reader = optuna.load_study(study_name="s", storage=make_storage(tmp_path, "journal"))
    assert [t.value for t in reader.trials] == [1.0]
