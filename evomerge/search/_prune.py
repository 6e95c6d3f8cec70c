"""Stopping hopeless trials early: the worker's side of ``search.pruning``.

The driver sends each job a :class:`PruneGuide` (plain data): the incumbent's per-prompt
scores in the run's fixed prompt order and the test's settings. The evaluator generates
and judges the trial's prompts ``chunk_size`` at a time in that order and asks
:func:`should_stop` after each chunk. The test is Optuna's ``WilcoxonPruner``'s, run
where the scores are (a Ray worker, not an Optuna objective): a one-sided Wilcoxon
signed-rank test (:func:`evomerge.search._wilcoxon.p_worse`) of the trial's scores minus
the incumbent's on the prompts both have scored, stopping when ``p < p_threshold``, at
least ``n_startup_steps`` prompts are paired, and the trial's mean so far is below the
incumbent's mean over all its prompts (in the objective's direction). Unlike Optuna's, a
prompt that either side failed to score is left out of the pairs rather than disabling
the test.

A stopped trial also gets :func:`pruned_value`, the value the sampler ranks it by (see
:mod:`evomerge.search._sampler` for why): a paired estimate of its objective over all
prompts, from each judge's differences to the incumbent on the prompts both scored, held
strictly below the incumbent's value.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from evomerge.search._wilcoxon import p_worse

__all__ = ["PruneGuide", "fixed_order", "pruned_value", "should_stop"]

T = TypeVar("T")


@dataclass(frozen=True)
class PruneGuide:
    """What a worker needs to stop a trial early. ``incumbent``: the best complete trial's
    per-prompt scores in the fixed order (None where unscored), or None before any trial
    completed (then nothing is stopped, the prompts are still scored in chunks).
    ``incumbent_value``: its (first) objective value; ``incumbent_judges``: each judge's
    score of each of its prompts in the fixed order (None where the judge did not apply or
    failed), for :func:`pruned_value`."""

    incumbent: list[float | None] | None
    chunk_size: int
    p_threshold: float
    n_startup_steps: int
    maximize: bool = True
    incumbent_value: float | None = None
    incumbent_judges: dict[str, list[float | None]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fixed_order(items: Sequence[T], seed: int) -> list[T]:
    """``items`` in the run's shuffled order: the same for every trial, worker and resume
    of a run (it depends only on the items and ``seed``)."""
    out = list(items)
    random.Random(seed).shuffle(out)
    return out


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def should_stop(own: Sequence[float | None], guide: PruneGuide) -> tuple[bool, float]:
    """Whether a trial whose first ``len(own)`` prompts scored ``own`` is clearly worse than
    the incumbent; returns ``(stop, p)`` (p is 1.0 when no test was run)."""
    best = guide.incumbent
    if best is None:
        return False, 1.0
    pairs = [
        (float(a), float(b))  # type: ignore[arg-type]
        for a, b in zip(own, best, strict=False)
        if _finite(a) and _finite(b)
    ]
    if len(pairs) < max(2, guide.n_startup_steps):
        return False, 1.0
    sign = 1.0 if guide.maximize else -1.0
    diffs = [sign * (a - b) for a, b in pairs]
    p = p_worse(diffs)
    best_scored = [float(b) for b in best if _finite(b)]  # type: ignore[arg-type]
    own_mean = sum(a for a, _ in pairs) / len(pairs)
    best_mean = sum(best_scored) / len(best_scored)
    if sign * own_mean >= sign * best_mean:  # its mean is no worse: never stop it
        return False, p
    return p < guide.p_threshold, p


def pruned_value(
    own: dict[str, list[float | None]], weights: dict[str, float], guide: PruneGuide
) -> float | None:
    """The value a trial stopped against ``guide``'s incumbent is ranked by: the
    incumbent's value plus, for each judge ``j`` of the objective (weight ``w_j``), ``w_j``
    times the mean of the trial's minus the incumbent's scores on the prompts both scored
    with ``j`` (``own``: the trial's per-judge scores, a prefix of the fixed order; a judge
    with no such prompt adds 0). The objective is the weighted sum of per-judge means, so
    this is the paired estimate of the trial's value over all prompts: the prompts' own
    difficulty cancels in each difference. It is held strictly below the incumbent's value
    (the test found the trial worse on these prompts). None when the guide lacks the
    incumbent's value or per-judge scores."""
    base, theirs = guide.incumbent_value, guide.incumbent_judges
    if base is None or theirs is None or not math.isfinite(base):
        return None
    estimate = float(base)
    for name, w in weights.items():
        pairs = [
            (float(a), float(b))  # type: ignore[arg-type]
            for a, b in zip(own.get(name, []), theirs.get(name, []), strict=False)
            if _finite(a) and _finite(b)
        ]
        if pairs:
            estimate += w * sum(a - b for a, b in pairs) / len(pairs)
    if guide.maximize:
        return min(estimate, math.nextafter(base, -math.inf))
    return max(estimate, math.nextafter(base, math.inf))
