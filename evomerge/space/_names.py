"""Genome parameter names: one function writes them, one reads them back.

A genome dimension is named ``g{group}.{filter}.{who}.{param}``, which is also its optuna
parameter name (stored in every study, so the format never changes)::

    g3.self_attn.a.weight       group 3, filter self_attn, source a, parameter weight
    g0.all.all.t                group 0, no filters, a shared parameter (slerp's t)
    g1.rest.base.weight         group 1, the catch-all filter, the base model's share

``filter`` may contain dots (``self_attn.q_proj``); ``who`` (a cleaned source name,
``all`` or ``base``) and ``param`` never do, so a name is read from the right.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "BASE",
    "FILTER_RE",
    "SHARED",
    "GenomeName",
    "format_genome_name",
    "parse_genome_name",
]

#: ``who`` of a shared parameter (one value for all sources) and of the base model's share.
SHARED = "all"
BASE = "base"

_WHO = r"[A-Za-z0-9_\-]+"
_PARAM = r"[A-Za-z0-9_]+"
_FILTER = r"[A-Za-z0-9_.\-]+"
#: What a filter name may hold.
FILTER_RE = re.compile(rf"^{_FILTER}$")
_NAME_RE = re.compile(rf"g(\d+)\.({_FILTER})\.({_WHO})\.({_PARAM})")


@dataclass(frozen=True)
class GenomeName:
    """The parts of a genome parameter name."""

    group: int
    filter: str  # a space filter, "rest" (the catch-all) or "all" (no filters)
    who: str  # a cleaned source name, SHARED or BASE
    param: str  # a merge parameter ("weight" for the base share)

    def __str__(self) -> str:
        return format_genome_name(self.group, self.filter, self.who, self.param)


def format_genome_name(group: int, filter: str, who: str, param: str) -> str:
    """The genome parameter name of these parts; ValueError for parts that could not be
    read back (a dot in ``who`` or ``param``, an empty part, a negative group)."""
    if group < 0 or not FILTER_RE.match(filter):
        raise ValueError(f"bad genome name part: group={group!r}, filter={filter!r}")
    if not re.fullmatch(_WHO, who) or not re.fullmatch(_PARAM, param):
        raise ValueError(
            f"bad genome name part: who={who!r}, param={param!r} (letters, digits, _ and - only)"
        )
    return f"g{group}.{filter}.{who}.{param}"


def parse_genome_name(name: str) -> GenomeName | None:
    """The parts of ``name``, or None when it is not a genome parameter name."""
    m = _NAME_RE.fullmatch(name)
    if m is None:
        return None
    return GenomeName(group=int(m.group(1)), filter=m.group(2), who=m.group(3), param=m.group(4))
