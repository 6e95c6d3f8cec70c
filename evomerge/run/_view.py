"""StudyView: a run's study seen from outside; the one definition of "the best trial".

::

    view = StudyView(study)
    view.best()          # the trial every command means by "best"
    view.pareto()        # the Pareto front, best first
    view.top_k(3)        # the k best: by value, or the front's first k
    view.pick("best")    # "best" or a trial number (must be COMPLETE)

Ranking (used by every command, the driver's progress bar included): one objective ranks
complete trials by value, in its direction; several objectives rank the Pareto front by
the first objective. Ties go to the lower trial number. So "best" is the first trial of
:meth:`StudyView.pareto`, and :meth:`StudyView.top_k` starts with it.

Read-only: it never writes to the study, so it works on a study a driver is writing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from evomerge.exceptions import SearchError
from evomerge.run import attrs as A
from evomerge.run._storage import is_finished

if TYPE_CHECKING:
    from evomerge.merge import LayerPath, MergeRecipe

__all__ = ["Counts", "StudyView", "rank_key"]

RankKey = Callable[[Sequence[float], int], tuple[float, int]]


def rank_key(directions: Sequence[str]) -> RankKey:
    """``key(values, number)``: smaller is better, by the first objective in its direction,
    ties to the lower trial number. The one ranking of trials (see the module docstring)."""
    sign = -1.0 if directions[0] == "maximize" else 1.0

    def key(values: Sequence[float], number: int) -> tuple[float, int]:
        return sign * float(values[0]), number

    return key


@dataclass(frozen=True)
class Counts:
    """Trials by state. ``complete``, ``failed`` and ``pruned`` count toward the budget
    (``finished``); ``interrupted`` does not."""

    complete: int
    failed: int
    interrupted: int
    running: int
    waiting: int
    pruned: int

    @property
    def finished(self) -> int:
        return self.complete + self.failed + self.pruned


class StudyView:
    """Read-only questions about a study: best, Pareto front, top-k, picking a trial."""

    def __init__(self, study: optuna.Study) -> None:
        self.study = study
        self.directions: list[str] = [d.name.lower() for d in study.directions]
        self._key = rank_key(self.directions)

    @property
    def name(self) -> str:
        return self.study.study_name

    @property
    def objective_names(self) -> list[str]:
        names = self.study.user_attrs.get(A.OBJECTIVE_NAMES)
        return list(names) if names else [f"objective{i}" for i in range(len(self.directions))]

    def attr(self, key: str, default: Any = None) -> Any:
        """A study attribute (see :mod:`evomerge.run.attrs`)."""
        return self.study.user_attrs.get(key, default)

    # -- trials ----------------------------------------------------------------------------

    def trials(self, *states: TrialState) -> list[FrozenTrial]:
        """Every trial in number order, or those in ``states``."""
        return self.study.get_trials(deepcopy=False, states=states or None)

    def complete(self) -> list[FrozenTrial]:
        return self.trials(TrialState.COMPLETE)

    def counts(self) -> Counts:
        trials = self.trials()
        return Counts(
            complete=sum(t.state == TrialState.COMPLETE for t in trials),
            failed=sum(t.state == TrialState.FAIL and is_finished(t) for t in trials),
            interrupted=sum(t.state == TrialState.FAIL and not is_finished(t) for t in trials),
            running=sum(t.state == TrialState.RUNNING for t in trials),
            waiting=sum(t.state == TrialState.WAITING for t in trials),
            pruned=sum(t.state == TrialState.PRUNED for t in trials),
        )

    def _rank(self, trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        return sorted(trials, key=lambda t: self._key(t.values, t.number))

    # -- the best ------------------------------------------------------------------------

    def pareto(self) -> list[FrozenTrial]:
        """The Pareto front (non-dominated complete trials), best first; with one objective,
        the best trial alone. Empty before the first complete trial."""
        if len(self.directions) == 1:
            best = self.best()
            return [] if best is None else [best]
        if not self.complete():
            return []
        return self._rank(self.study.best_trials)

    def best(self) -> FrozenTrial | None:
        """The best trial (see the module docstring), or None before any trial completed."""
        if len(self.directions) > 1:
            front = self.pareto()
            return front[0] if front else None
        done = self.complete()
        return min(done, key=lambda t: self._key(t.values, t.number)) if done else None

    def top_k(self, k: int) -> list[FrozenTrial]:
        """The ``k`` best trials: by value with one objective, else the front's first ``k``."""
        if k <= 0:
            return []
        if len(self.directions) > 1:
            return self.pareto()[:k]
        return self._rank(self.complete())[:k]

    def pick(self, trial: str | int) -> FrozenTrial:
        """``"best"`` or a trial number; the trial must be COMPLETE.

        Raises SearchError when there is no complete trial, no such trial, or it is not
        complete (the message says its state and error).
        """
        if str(trial) == "best":
            best = self.best()
            if best is None:
                raise SearchError("the study has no complete trial yet")
            return best
        try:
            number = int(trial)
        except ValueError:
            raise SearchError(f"trial must be 'best' or a trial number, got {trial!r}") from None
        trials = self.trials()
        found = next((t for t in trials if t.number == number), None)
        if found is None:
            span = f"trials 0..{len(trials) - 1}" if trials else "no trials yet"
            raise SearchError(f"no trial {number} in the study ({span})")
        if found.state != TrialState.COMPLETE:
            err = found.user_attrs.get(A.ERROR, "")
            raise SearchError(
                f"trial {number} is {found.state.name}{': ' + err if err else ''}; pick a complete trial"
            )
        return found

    def path(self, trial: FrozenTrial) -> LayerPath:
        """The trial's data-flow path; SearchError when it has none recorded."""
        from evomerge.merge import LayerPath

        data = trial.user_attrs.get(A.PATH)
        if data is None:
            raise SearchError(f"trial {trial.number} has no recorded data-flow path")
        return LayerPath.from_dict(data, source=f"{self.name}: trial {trial.number}")

    def recipe(self, trial: FrozenTrial) -> MergeRecipe:
        """The trial's merge recipe; SearchError when it has none recorded."""
        from evomerge.merge import MergeRecipe

        data = trial.user_attrs.get(A.RECIPE)
        if data is None:
            what = "a data-flow path" if A.PATH in trial.user_attrs else "no recorded recipe"
            raise SearchError(f"trial {trial.number} has {what}, not a merge recipe")
        return MergeRecipe.from_mergekit_dict(data, source=f"{self.name}: trial {trial.number}")
