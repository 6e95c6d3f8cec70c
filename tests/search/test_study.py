"""The study layer: samplers, CMA-ES state across a resume, crash recovery, run-dir checks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from evomerge.config import SearchConfig
from evomerge.exceptions import ConfigError, SearchError
from evomerge.run import (
    check_same_run,
    count_finished,
    driver_lock,
    make_storage,
    open_study,
    recover_interrupted,
    repair_journal,
)
from evomerge.search import distributions, make_sampler
from evomerge.space import SearchSpace, load_space_spec

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def space() -> SearchSpace:
    return SearchSpace(
        spec=load_space_spec("ties_layerwise"), num_layers=8, base="/b", sources=["/a", "/c"]
    )


def _objective(space: SearchSpace, params: dict[str, float]) -> float:
    x = space.from_params(params)
    return -float(np.sum((x - 0.3) ** 2))


def _run(study: optuna.Study, space: SearchSpace, n: int) -> None:
    dists = distributions(space)
    for _ in range(n):
        t = study.ask(dists)
        study.tell(t, _objective(space, t.params))


def _open(run_dir: Path, space: SearchSpace, seed: int) -> optuna.Study:
    sampler = make_sampler(
        SearchConfig(sampler="cmaes", population_size=4), n_objectives=1, seed=seed
    )
    study, _ = open_study(
        storage=make_storage(run_dir, "journal"),
        study_name="s",
        sampler=sampler,
        directions=["maximize"],
    )
    return study


def _system_attrs(study: optuna.Study, number: int) -> dict[str, object]:
    """A trial's system attributes as stored (read back through a new study object)."""
    return study.get_trials(deepcopy=False)[number].system_attrs


def test_cmaes_state_carries_over_a_resume(tmp_path: Path, space: SearchSpace) -> None:
    study = _open(tmp_path, space, seed=0)
    _run(study, space, 14)
    gens = [t.system_attrs.get("cma:generation") for t in study.trials]
    before = max(g for g in gens if g is not None)
    assert before >= 2  # several generations were told (popsize 4)
    del study

    # a new process: new sampler object, same journal file
    resumed = _open(tmp_path, space, seed=14)
    trial = resumed.ask(distributions(space))
    assert trial.number == 14
    assert _system_attrs(resumed, trial.number)["cma:generation"] >= before  # no restart at 0

    (tmp_path / "fresh").mkdir()
    fresh = _open(tmp_path / "fresh", space, seed=0)  # control: a new study starts at generation 0
    _run(fresh, space, 1)
    t2 = fresh.ask(distributions(space))
    assert _system_attrs(fresh, t2.number)["cma:generation"] == 0


def test_samplers_and_multi_objective_rules() -> None:
    assert isinstance(
        make_sampler(SearchConfig(sampler="tpe"), n_objectives=2, seed=0),
        optuna.samplers.TPESampler,
    )
    assert isinstance(
        make_sampler(SearchConfig(sampler="nsga2", population_size=6), n_objectives=2, seed=0),
        optuna.samplers.NSGAIISampler,
    )
    assert isinstance(
        make_sampler(SearchConfig(sampler="random"), n_objectives=1, seed=0),
        optuna.samplers.RandomSampler,
    )
    with pytest.raises(SearchError, match=r"cmaes optimizes one objective.*nsga2 or tpe"):
        make_sampler(SearchConfig(sampler="cmaes"), n_objectives=2, seed=0)


def test_directions_must_match_on_resume(tmp_path: Path) -> None:
    storage = make_storage(tmp_path, "journal")
    open_study(
        storage=storage,
        study_name="s",
        sampler=optuna.samplers.RandomSampler(),
        directions=["maximize"],
    )
    with pytest.raises(SearchError, match=r"optimizes \['maximize'\].*new run directory"):
        open_study(
            storage=storage,
            study_name="s",
            sampler=optuna.samplers.RandomSampler(),
            directions=["maximize", "minimize"],
        )


def test_recover_interrupted_requeues_once_and_is_not_counted(
    tmp_path: Path, space: SearchSpace
) -> None:
    study = _open(tmp_path, space, seed=0)
    dists = distributions(space)
    done = study.ask(dists)
    study.tell(done, 1.0)
    lost = [study.ask(dists), study.ask(dists)]  # left RUNNING by a "dead driver"
    failed = study.ask(dists)
    study.tell(failed, state=TrialState.FAIL)

    storage = make_storage(tmp_path, "journal")
    assert recover_interrupted(study, storage) == 2
    assert recover_interrupted(study, storage) == 0  # idempotent: nothing RUNNING any more
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    assert all(states[t.number] == TrialState.FAIL for t in lost)
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert sorted(t.user_attrs["retry_of"] for t in waiting) == sorted(t.number for t in lost)
    assert count_finished(study) == (1, 1)  # the interrupted trials do not count

    # re-asked with the same parameters
    again = [study.ask(dists) for _ in range(2)]
    assert sorted(tuple(sorted(t.params.items())) for t in again) == sorted(
        tuple(sorted(t.params.items())) for t in lost
    )


def test_recover_does_not_enqueue_twice_after_a_crash_in_between(
    tmp_path: Path, space: SearchSpace
) -> None:
    study = _open(tmp_path, space, seed=0)
    t = study.ask(distributions(space))
    study.enqueue_trial(
        t.params, user_attrs={"retry_of": t.number}
    )  # enqueued, then the driver died
    recover_interrupted(study, make_storage(tmp_path, "journal"))
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert len(waiting) == 1


def test_repair_journal_after_a_kill_mid_write(tmp_path: Path, space: SearchSpace) -> None:
    study = _open(tmp_path, space, seed=0)
    _run(study, space, 3)
    journal = tmp_path / "study.journal"
    with open(journal, "ab") as f:
        f.write(b'{"op_code": 5, "worker_id": "x", "trial_id": 9, "para')  # cut mid-line
    os.symlink(journal, f"{journal}.lock")  # the dead writer's lock
    repair_journal(journal)
    assert not Path(f"{journal}.lock").is_symlink()
    resumed = _open(tmp_path, space, seed=3)
    _run(resumed, space, 1)  # appends cleanly
    assert [t.state for t in _open(tmp_path, space, seed=4).trials] == [TrialState.COMPLETE] * 4


def test_driver_lock_is_exclusive(tmp_path: Path) -> None:
    # flock conflicts between open file descriptions, even within one process
    with (
        driver_lock(tmp_path),
        pytest.raises(SearchError, match=rf"another evomerge search \(pid {os.getpid()}\)"),
        driver_lock(tmp_path),
    ):
        pass
    with driver_lock(tmp_path):  # released
        pass


def test_resume_refuses_a_different_config(tmp_path: Path) -> None:
    stored = {
        "name": "a",
        "search": {"sampler": "cmaes", "n_trials": 10},
        "space": {"layer_granularity": 4},
        "root": "/x",
    }
    check_same_run(
        stored,
        {**stored, "search": {"sampler": "cmaes", "n_trials": 50}, "root": "/y"},
        run_dir=tmp_path,
    )
    check_same_run(
        {**stored, "workers": {"num": 2}}, {**stored, "workers": {"num": 8}}, run_dir=tmp_path
    )
    changed = {
        **stored,
        "search": {"sampler": "tpe", "n_trials": 10},
        "space": {"layer_granularity": 2},
    }
    with pytest.raises(ConfigError) as err:
        check_same_run(stored, changed, run_dir=tmp_path)
    text = str(err.value)
    assert "search.sampler: 'cmaes' (run dir) != 'tpe' (now)" in text
    assert "space.layer_granularity: 4 (run dir) != 2 (now)" in text


def test_a_run_written_before_a_new_field_resumes_when_the_field_keeps_its_default(
    tmp_path: Path,
) -> None:
    stored = {"name": "a", "search": {"sampler": "cmaes", "n_trials": 10}}
    pruning = {"enabled": False, "chunk_size": 4, "p_threshold": 0.1, "n_startup_steps": 4}
    now = {"name": "a", "search": {"sampler": "cmaes", "n_trials": 10, "pruning": pruning}}
    check_same_run(stored, now, run_dir=tmp_path)  # search.pruning did not exist then
    on = {**now, "search": {**now["search"], "pruning": {**pruning, "enabled": True}}}
    with pytest.raises(ConfigError, match=r"search.pruning.enabled: '<unset>' \(run dir\) != True"):
        check_same_run(stored, on, run_dir=tmp_path)
