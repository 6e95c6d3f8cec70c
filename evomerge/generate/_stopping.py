"""Stop strings: cutting finished answers, and telling when a partial answer is done."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["cut_at_stop", "has_stop"]


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest occurrence of any stop string."""
    cut = len(text)
    for s in stops:
        i = text.find(s)
        if i != -1 and i < cut:
            cut = i
    return text[:cut]


def has_stop(text: str, stops: Sequence[str]) -> bool:
    """Whether any stop string occurs in ``text``."""
    return any(s in text for s in stops)
