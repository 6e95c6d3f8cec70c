"""The driver's dispatch loop in-process: real Workers, a real evaluator, a real study.

Only Ray's transport is replaced, by a stand-in that runs each call when the driver waits
for it (it can also make a call's actor die or hang). Ray itself is exercised by
test_driver.py, test_cluster.py and test_resume.py on real local clusters; these tests
check every branch of the loop (budget, retries, worker death, timeouts, interrupts,
decode errors, the incumbent) in seconds, so that they also serve mutation testing.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from evomerge.config import load_run_config
from evomerge.run import INTERRUPTED_ERROR, StudyView, attrs, build_space
from evomerge.search import distributions
from evomerge.search._driver import Driver
from evomerge.search._worker import Worker
from evomerge.search._workers import Slot
from evomerge.testing.tiny import build_tiny_model, perturb_model

optuna.logging.set_verbosity(optuna.logging.WARNING)


class RayError(Exception):
    """Stands for ray.exceptions.RayError (an actor died)."""


class _Ref:
    """Stands for an ObjectRef: the call runs when the driver waits for it."""

    def __init__(self, call: Callable[[], Any], *, dies: bool, hangs: bool) -> None:
        self._call, self.dies, self.hangs = call, dies, hangs
        self.outcome: Any = None
        self.done = False

    def resolve(self) -> None:
        self.outcome = RayError("the actor died unexpectedly") if self.dies else self._call()
        self.done = True


class InProcessRay:
    """What the driver uses of the ``ray`` module: ``wait``, ``get``, ``exceptions``."""

    exceptions = SimpleNamespace(RayError=RayError)

    def __init__(self) -> None:
        self.die_once: set[int] = set()  # trial numbers whose actor dies (first dispatch)
        self.hang_once: set[int] = set()  # trial numbers that never return (first dispatch)
        self.interrupt_after: int | None = None  # raise KeyboardInterrupt after N waits
        self.edit: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # change results
        self.waits = 0

    def call(self, trial_number: int, fn: Callable[[], Any]) -> _Ref:
        dies, hangs = trial_number in self.die_once, trial_number in self.hang_once
        self.die_once.discard(trial_number)
        self.hang_once.discard(trial_number)
        return _Ref(fn, dies=dies, hangs=hangs)

    def wait(
        self, refs: list[_Ref], num_returns: int = 1, timeout: float | None = None
    ) -> tuple[list[_Ref], list[_Ref]]:
        self.waits += 1
        if self.interrupt_after is not None and self.waits > self.interrupt_after:
            raise KeyboardInterrupt
        for ref in refs:
            if not ref.hangs:
                ref.resolve()
                return [ref], [r for r in refs if r is not ref]
        return [], list(refs)

    def get(self, ref: _Ref) -> Any:
        if isinstance(ref.outcome, BaseException):
            raise ref.outcome
        return ref.outcome


class _Actor:
    def __init__(self, ray: InProcessRay, worker: Worker) -> None:
        def run(n: int, recipe: Any) -> Any:
            data = worker.evaluate(n, recipe)
            return ray.edit(data) if ray.edit is not None else data

        self.evaluate = SimpleNamespace(
            remote=lambda n, recipe: ray.call(n, lambda: run(n, recipe))
        )


class InProcessGroup:
    """The driver's view of a WorkerGroup (slots, replace), with real Worker objects."""

    def __init__(self, ray: InProcessRay, make_worker: Callable[[int], Worker], num: int) -> None:
        self.ray = ray
        self._make = make_worker
        self.max_restarts = 1
        self.per_worker = 1  # trials in flight per slot (WorkerGroup.per_worker)
        self.slots = [
            Slot(index=i, actor=_Actor(ray, make_worker(i)), ready=True) for i in range(num)
        ]
        self.replaced: list[tuple[int, str]] = []

    def starting_refs(self) -> list[Any]:
        return []

    def on_started(self, ref: Any) -> None:  # pragma: no cover - nothing starts here
        raise AssertionError("no actor is starting")

    def check_start_deadlines(self) -> None:
        pass

    def replace(self, slot: Slot, reason: str) -> bool:
        self.replaced.append((slot.index, reason))
        if slot.restarts >= self.max_restarts:
            slot.dead, slot.ready = True, False
            return False
        slot.restarts += 1
        slot.actor = _Actor(self.ray, self._make(slot.index))
        return True

    @property
    def ready_slots(self) -> list[Slot]:
        return [s for s in self.slots if s.ready and not s.dead]

    @property
    def all_dead(self) -> bool:
        return all(s.dead for s in self.slots)


@pytest.fixture(scope="module")
def config(run_yaml: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A run of two sources of a 2-layer tiny model, scored by the quadratic evaluator
    (trial 3 raises on every attempt)."""
    root = tmp_path_factory.mktemp("loop")
    base = build_tiny_model(root / "base", seed=0, num_layers=2, tokenizer=False)
    models = {
        "base": base,
        "ft_a": perturb_model(base, root / "ft_a", seed=1),
        "ft_b": perturb_model(base, root / "ft_b", seed=2),
    }
    path = run_yaml(root / "run.yaml", models, name="loop", options={"fail_trials": [3]})
    return load_run_config(path)


@pytest.fixture
def make(config: Any, tmp_path: Path) -> Iterator[Callable[..., tuple[Driver, InProcessGroup]]]:
    """``make(target=6, retries=1, workers=2, timeout=None, ray=None, resume=None,
    options=None, infra_failures=3, ...)``: a Driver over an in-process group of real
    Workers (resume: a new session of a driver; ``options`` add evaluator (fault
    injection) options)."""
    level = logging.getLogger("evomerge").level  # a Worker quiets evomerge's loggers

    def build(
        *,
        target: int = 6,
        retries: int = 1,
        workers: int = 2,
        timeout: float | None = None,
        ray: InProcessRay | None = None,
        resume: Driver | None = None,
        finished: int = 0,
        progress: bool = False,
        options: dict[str, Any] | None = None,
        infra_failures: int = 3,
    ) -> tuple[Driver, InProcessGroup]:
        data = config.model_dump(mode="json")
        data["evaluator"]["options"].update(options or {})
        group = InProcessGroup(
            ray or InProcessRay(),
            lambda i: Worker(data, str(tmp_path), worker_index=i, device="cpu"),
            workers,
        )
        if resume is not None:  # a new session on the same study and storage
            study, storage = resume.study, resume.storage
        else:
            storage = optuna.storages.InMemoryStorage()
            study = optuna.create_study(
                storage=storage,
                sampler=optuna.samplers.RandomSampler(seed=0),
                direction="maximize",
            )
        driver = Driver(
            study=study,
            storage=storage,
            space=build_space(config),
            group=group,  # type: ignore[arg-type]
            target=target,
            finished=finished,
            retries=retries,
            trial_timeout_s=timeout,
            progress=progress,
            infra_failures=infra_failures,
        )
        return driver, group

    yield build
    logging.getLogger("evomerge").setLevel(level)


def _trials(driver: Driver, *states: TrialState) -> list[Any]:
    return driver.study.get_trials(deepcopy=False, states=states or None)


def test_reaches_the_target_exactly_and_records_each_trial(make: Callable[..., Any]) -> None:
    driver, _ = make(target=6, retries=1)  # trial 3 raises on every attempt
    assert driver.run() == "done"
    trials = _trials(driver)
    assert len(trials) == 6  # no trial asked beyond the budget
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 5
    failed = _trials(driver, TrialState.FAIL)
    assert [t.number for t in failed] == [3]
    t3 = failed[0]
    assert (
        t3.user_attrs[attrs.ATTEMPTS] == 2
        and "injected failure (trial 3)" in t3.user_attrs[attrs.ERROR]
    )
    assert "RuntimeError" in t3.user_attrs[attrs.TRACEBACK] and attrs.ERRORS not in t3.user_attrs
    for t in _trials(driver, TrialState.COMPLETE):
        ua = t.user_attrs
        assert ua[attrs.ATTEMPTS] == 1 and attrs.ERRORS not in ua
        assert ua[attrs.RECIPE]["merge_method"] == "linear"
        assert ua[attrs.SCORES] == {"distance": pytest.approx(-t.values[0])}
        assert ua[attrs.SAMPLES][0]["question"] == "genome" and set(ua[attrs.TIMINGS]) >= {
            "total_s"
        }
        assert ua[attrs.WORKER] in ("0", "1") and ua[attrs.NODE_ID]
    assert (driver.stats.n_complete, driver.stats.n_failed, driver.finished) == (5, 1, 6)
    best = StudyView(driver.study).best()
    assert (driver.stats.best_trial, driver.stats.best_values) == (best.number, list(best.values))
    assert driver.trials_per_hour > 0 and driver.mean_overhead_s >= 0


def test_a_failed_attempt_is_retried_on_the_same_trial(make: Callable[..., Any]) -> None:
    driver, _ = make(target=5, retries=3)  # trial 3 raises on every attempt
    assert driver.run() == "done"
    [t3] = _trials(driver, TrialState.FAIL)
    assert t3.number == 3 and t3.user_attrs[attrs.ATTEMPTS] == 4  # 1 + 3 retries
    assert len(_trials(driver)) == 5


def test_no_retries_fails_at_once(make: Callable[..., Any]) -> None:
    driver, _ = make(target=5, retries=0)
    assert driver.run() == "done"
    [t3] = _trials(driver, TrialState.FAIL)
    assert t3.user_attrs[attrs.ATTEMPTS] == 1


def test_a_dead_worker_is_replaced_and_its_trial_rerun_even_without_retries(
    make: Callable[..., Any],
) -> None:
    ray = InProcessRay()
    ray.die_once = {1}
    driver, group = make(target=4, retries=0, ray=ray)
    assert driver.run() == "done"
    t1 = _trials(driver)[1]
    assert t1.state == TrialState.COMPLETE and t1.user_attrs[attrs.ATTEMPTS] == 2
    assert "died" in t1.user_attrs[attrs.ERRORS][0]
    assert len(group.replaced) == 1 and "worker" in group.replaced[0][1]
    assert driver.stats.n_complete == 3 and driver.stats.n_failed == 1  # trial 3 still fails


def test_a_trial_that_dies_every_time_fails_after_its_retries(make: Callable[..., Any]) -> None:
    ray = InProcessRay()
    driver, group = make(target=3, retries=1, ray=ray, workers=1)
    group.max_restarts = 5
    original = ray.call

    def always_die(n: int, fn: Callable[[], Any]) -> _Ref:
        ref = original(n, fn)
        ref.dies = ref.dies or n == 0
        return ref

    ray.call = always_die  # type: ignore[method-assign,assignment]
    assert driver.run() == "done"
    t0 = _trials(driver)[0]
    assert t0.state == TrialState.FAIL and t0.user_attrs[attrs.ATTEMPTS] == 2
    assert "died" in t0.user_attrs[attrs.ERROR] and len(group.replaced) == 2


def test_a_hanging_trial_times_out_and_is_retried(make: Callable[..., Any]) -> None:
    ray = InProcessRay()
    ray.hang_once = {0}
    driver, group = make(target=3, retries=1, timeout=0.05, ray=ray, workers=1)
    assert driver.run() == "done"
    t0 = _trials(driver)[0]
    assert t0.state == TrialState.COMPLETE and t0.user_attrs[attrs.ATTEMPTS] == 2
    assert "timed out after 0.05s" in t0.user_attrs[attrs.ERRORS][0]
    assert group.replaced and "timed out" in group.replaced[0][1]


def test_a_hang_without_retries_fails_the_trial(make: Callable[..., Any]) -> None:
    ray = InProcessRay()
    ray.hang_once = {0}
    driver, _ = make(target=2, retries=0, timeout=0.05, ray=ray, workers=1)
    assert driver.run() == "done"
    t0 = _trials(driver)[0]
    assert t0.state == TrialState.FAIL and "timed out" in t0.user_attrs[attrs.ERROR]


def test_every_worker_lost_leaves_the_study_resumable(make: Callable[..., Any]) -> None:
    ray = InProcessRay()
    ray.die_once = {0, 1, 2, 3}
    driver, group = make(target=6, retries=5, ray=ray, workers=1)
    group.max_restarts = 0
    assert driver.run() == "workers_lost"
    assert group.all_dead
    assert not _trials(driver, TrialState.RUNNING)  # nothing left in flight
    waiting = _trials(driver, TrialState.WAITING)
    assert [t.user_attrs[attrs.RETRY_OF] for t in waiting] == [0]  # re-asked on resume
    lost = _trials(driver)[0]
    assert lost.state == TrialState.FAIL and lost.user_attrs[attrs.INTERRUPTED]
    assert lost.user_attrs[attrs.ERROR] == INTERRUPTED_ERROR  # not the infrastructure message


def test_ctrl_c_reenqueues_the_trials_in_flight(make: Callable[..., Any]) -> None:
    ray = InProcessRay()
    ray.interrupt_after = 3
    driver, _ = make(target=10, ray=ray, workers=2)
    assert driver.run() == "interrupted"
    running = [t for t in _trials(driver) if t.user_attrs.get(attrs.INTERRUPTED)]
    assert len(running) == 2  # both workers had a trial
    assert all(t.user_attrs[attrs.ERROR] == INTERRUPTED_ERROR for t in running)
    waiting = _trials(driver, TrialState.WAITING)
    assert sorted(t.user_attrs[attrs.RETRY_OF] for t in waiting) == sorted(
        t.number for t in running
    )
    dists = distributions(driver.space)
    again = [driver.study.ask(dists) for _ in waiting]  # what a resumed driver is given
    assert sorted(tuple(sorted(t.params.items())) for t in again) == sorted(
        tuple(sorted(t.params.items())) for t in running
    )
    assert driver.stats.n_complete == 3 and driver.finished == 3


def test_a_genome_that_cannot_be_decoded_fails_its_trial(
    make: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    driver, _ = make(target=4, workers=1)
    decode = driver.space.decode
    calls = {"n": 0}

    def flaky(x: np.ndarray) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise ValueError("bad genome")
        return decode(x)

    monkeypatch.setattr(driver.space, "decode", flaky)
    assert driver.run() == "done"
    t1 = _trials(driver)[1]
    assert t1.state == TrialState.FAIL and t1.user_attrs[attrs.ERROR] == "cannot decode: bad genome"
    assert attrs.RECIPE not in t1.user_attrs and len(_trials(driver)) == 4


def test_the_incumbent_follows_the_run_layer_ranking(make: Callable[..., Any]) -> None:
    driver, _ = make(target=1)
    driver._note_best(5, [-0.5])
    driver._note_best(7, [-0.5])  # a tie keeps the lower number
    driver._note_best(3, [-0.5])
    assert (driver.stats.best_trial, driver.stats.best_values) == (3, [-0.5])
    driver._note_best(9, [-0.4])
    driver._note_best(2, [-0.9])
    assert (driver.stats.best_trial, driver.stats.best_values) == (9, [-0.4])
    driver._note_best(1, [0.0, 1.0])  # several objectives: no single incumbent
    assert driver.stats.best_trial == 9


def test_a_resumed_session_asks_only_what_is_left_and_starts_from_the_incumbent(
    make: Callable[..., Any],
) -> None:
    first, _ = make(target=2, workers=1)
    assert first.run() == "done"
    best = StudyView(first.study).best()
    second, _ = make(target=5, workers=1, resume=first, finished=2)
    assert (second.stats.best_trial, second.stats.best_values) == (best.number, list(best.values))
    assert second.run() == "done"
    assert len(_trials(second)) == 5 and second.finished == 5  # 3 more, not 5
    assert second.stats.n_complete + second.stats.n_failed == 3


def test_the_progress_bar_counts_trials_and_shows_best_and_failures(
    make: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    driver, _ = make(target=6, progress=True)
    assert driver.run() == "done"
    err = capsys.readouterr().err
    best = driver.stats.best_values
    assert best is not None and "6/6" in err and f"best={best[0]:.4g}" in err
    assert "failed=1" in err and "per_h=" in err
    final = [f for f in err.replace("\n", "\r").split("\r") if f.strip()][-1]
    assert "6/6" in final and "failed=1" in final  # a failure counts one trial, like a success
    # trials per hour as of the last update: at least the figure read now (more time has
    # elapsed since; no upper bound, a loaded machine may stall in between)
    shown = float(final.split("per_h=")[1].split(",")[0].rstrip("]"))
    assert shown >= driver.trials_per_hour - 1


def test_results_keep_three_samples_and_every_extra(make: Callable[..., Any]) -> None:
    ray = InProcessRay()
    samples = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(5)]
    ray.edit = lambda data: {**data, "samples": samples, "extra": {"judge_errors": ["x"]}}
    driver, _ = make(target=2, ray=ray)
    assert driver.run() == "done"
    for t in _trials(driver):
        assert t.user_attrs[attrs.SAMPLES] == samples[:3] and t.user_attrs["judge_errors"] == ["x"]


def test_different_errors_of_one_trial_are_all_kept(make: Callable[..., Any]) -> None:
    ray = InProcessRay()
    ray.die_once = {3}  # trial 3 dies first, then raises its injected error
    driver, _ = make(target=4, retries=1, ray=ray, workers=1)
    assert driver.run() == "done"
    t3 = _trials(driver)[3]
    assert t3.state == TrialState.FAIL and t3.user_attrs[attrs.ATTEMPTS] == 2
    errors = t3.user_attrs[attrs.ERRORS]
    assert "died" in errors[0] and "injected failure (trial 3)" in errors[1]
    assert t3.user_attrs[attrs.ERROR] == errors[1]


def test_throughput_and_overhead_figures(make: Callable[..., Any]) -> None:
    idle, _ = make(target=1)
    assert idle.trials_per_hour == 0 and math.isnan(idle.mean_overhead_s)
    t0 = time.monotonic()
    driver, _ = make(target=6)
    assert driver.run() == "done"
    wall = time.monotonic() - t0
    assert 3600 * 6 / wall <= driver.trials_per_hour < 3600 * 6 / 1e-3
    assert 0 < driver.mean_overhead_s < wall / 6


def test_infrastructure_failures_in_a_row_stop_the_search_and_tell_no_trial_failed(
    make: Callable[..., Any],
) -> None:
    driver, _ = make(target=8, workers=2, options={"unreachable_trials": list(range(100))})
    assert driver.run() == "infrastructure"
    assert driver.infra_streak == 3 and "ConnectionRefusedError" in (driver.infra_error or "")
    assert not _trials(driver, TrialState.COMPLETE, TrialState.RUNNING)
    failed = _trials(driver, TrialState.FAIL)
    assert failed and all(t.user_attrs[attrs.INTERRUPTED] for t in failed)  # put back, not FAIL
    assert "infrastructure" in failed[0].user_attrs[attrs.ERROR]
    waiting = _trials(driver, TrialState.WAITING)
    assert sorted(t.user_attrs[attrs.RETRY_OF] for t in waiting) == sorted(t.number for t in failed)
    assert driver.finished == 0


def test_the_limit_is_configurable(make: Callable[..., Any]) -> None:
    driver, _ = make(
        target=8, workers=1, infra_failures=5, options={"unreachable_trials": list(range(100))}
    )
    assert driver.run() == "infrastructure" and driver.infra_streak == 5


def test_successes_in_between_reset_the_streak_and_a_trial_still_fails_in_the_end(
    make: Callable[..., Any],
) -> None:
    """One trial that always fails 'by infrastructure' while others complete: the search
    goes on, and after its infrastructure tries that trial fails like any other."""
    driver, _ = make(target=6, workers=2, options={"unreachable_trials": [2]})
    assert driver.run() == "done"
    by_number = {t.number: t for t in _trials(driver)}
    t2 = by_number[2]
    assert t2.state == TrialState.FAIL and "ConnectionRefusedError" in t2.user_attrs[attrs.ERROR]
    assert driver.stats.n_complete == 4 and driver.stats.n_failed == 2  # trials 2 and 3
