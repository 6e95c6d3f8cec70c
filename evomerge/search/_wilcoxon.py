"""A one-sided Wilcoxon signed-rank test on paired differences, for stopping hopeless trials.

``p_worse(diffs)`` is the p-value of "the differences tend to be negative" (alternative
``less``), the test Optuna's ``WilcoxonPruner`` runs between a trial and the best trial
(differences as ``trial - best`` when maximizing). Zeros are kept and their ranks split
half to each side (Wilcoxon's "zsplit"); tied magnitudes get their average rank. The null
distribution: exact (every sign flip counted) when there are no ties or zeros and at most
50 differences, or at most 13 differences in any case; else the normal approximation with
the tie correction, no continuity correction. These are scipy.stats.wilcoxon's choices with
its defaults, so the p-values agree with it (tests/search/test_pruning.py checks it); this
module needs only the standard library.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["p_worse"]

_EXACT_NO_TIES = 50
_EXACT_ANY = 13


def _average_ranks(values: Sequence[float]) -> tuple[list[float], list[int]]:
    """Ranks 1..n of ``values`` (ties get their average) and the size of each tie group."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    groups: list[int] = []
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        rank = (i + j) / 2 + 1  # positions i..j hold ranks i+1..j+1
        for k in range(i, j + 1):
            ranks[order[k]] = rank
        groups.append(j - i + 1)
        i = j + 1
    return ranks, groups


def _exact_cdf(ranks: Sequence[float], zero_part: float, observed: float) -> float:
    """P(R+ <= observed) when each nonzero difference's sign is + or - with probability
    1/2: R+ is ``zero_part`` plus the sum of a random subset of ``ranks``. Ranks are
    multiples of 1/2, so the subset sums are counted on doubled (integer) ranks."""
    doubled = [round(2 * r) for r in ranks]
    counts = [1] + [0] * sum(doubled)
    for r in doubled:
        for total in range(len(counts) - 1, r - 1, -1):
            counts[total] += counts[total - r]
    limit = 2 * (observed - zero_part)
    hits = sum(c for total, c in enumerate(counts) if total <= limit + 1e-9)
    return hits / 2 ** len(doubled)


def p_worse(diffs: Sequence[float]) -> float:
    """One-sided p-value that ``diffs`` (finite, at least one) are shifted below zero; 1.0
    for no differences."""
    n = len(diffs)
    if n == 0:
        return 1.0
    magnitudes = [abs(d) for d in diffs]
    ranks, groups = _average_ranks(magnitudes)
    r_plus = sum(r for r, d in zip(ranks, diffs, strict=True) if d > 0)
    zero_part = sum(r for r, d in zip(ranks, diffs, strict=True) if d == 0) / 2
    r_plus += zero_part
    has_zeros = zero_part > 0
    has_ties = any(g > 1 for g in groups)
    if (not has_ties and not has_zeros and n <= _EXACT_NO_TIES) or n <= _EXACT_ANY:
        nonzero = [r for r, d in zip(ranks, diffs, strict=True) if d != 0]
        # without ties the statistic is an integer; with them, count sums up to it
        observed = math.ceil(r_plus) if not has_ties and not has_zeros else r_plus
        return min(1.0, _exact_cdf(nonzero, zero_part, observed))
    mean = n * (n + 1) / 4
    tie_term = sum(g**3 - g for g in groups) / 2
    sd = math.sqrt((n * (n + 1) * (2 * n + 1) - tie_term) / 24)
    if sd == 0:
        return 1.0
    z = (r_plus - mean) / sd
    return 0.5 * math.erfc(-z / math.sqrt(2))  # the standard normal CDF at z
