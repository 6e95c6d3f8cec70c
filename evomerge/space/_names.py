"""Genome parameter names: one function writes them, one reads them back.

A genome dimension is named ``g{group}.{filter}.{who}.{param}``, which is also its optuna
parameter name (stored in every study, so the format never changes)::

    g3.self_attn.a.weight       group 3, filter self_attn, source a, parameter weight
    g0.all.all.t                group 0, no filters, a shared parameter (slerp's t)
    g1.rest.base.weight         group 1, the catch-all filter, the base model's share

``filter`` may contain dots (``self_attn.q_proj``); ``who`` (a cleaned source name,
``all`` or ``base``) and ``param`` never do, so a name is read from the right.

The data-flow space (:mod:`evomerge.space._dataflow`) has two kinds of genes::

    slot.r1.b.l3                slot: repetition 1, source b, layer 3 (an indicator)
    scale.a.l2.b.l3             the scale on the step from a's layer 2 into b's layer 3
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "BASE",
    "FILTER_RE",
    "SHARED",
    "GenomeName",
    "PathGeneName",
    "format_genome_name",
    "format_scale_name",
    "format_slot_name",
    "parse_genome_name",
    "parse_path_gene_name",
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
_SLOT_RE = re.compile(rf"slot\.r(\d+)\.({_WHO})\.l(\d+)")
_SCALE_RE = re.compile(rf"scale\.({_WHO})\.l(\d+)\.({_WHO})\.l(\d+)")


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


@dataclass(frozen=True)
class PathGeneName:
    """The parts of a data-flow gene name: a slot's indicator (``rep`` set) or a transition
    scale (``src`` set, the layer the step comes from). ``layer`` is ``(who, index)``."""

    kind: str  # "slot" | "scale"
    layer: tuple[str, int]
    rep: int | None = None
    src: tuple[str, int] | None = None

    def __str__(self) -> str:
        if self.kind == "slot":
            assert self.rep is not None
            return format_slot_name(self.rep, *self.layer)
        assert self.src is not None
        return format_scale_name(self.src, self.layer)


def _check_who(*whos: str) -> None:
    for who in whos:
        if not re.fullmatch(_WHO, who):
            raise ValueError(f"bad source name in a gene name: {who!r} (letters, digits, _ and -)")


def format_slot_name(rep: int, who: str, layer: int) -> str:
    """``slot.r{rep}.{who}.l{layer}``: the indicator of one slot of a data-flow genome."""
    _check_who(who)
    if rep < 0 or layer < 0:
        raise ValueError(f"bad slot: rep={rep}, layer={layer}")
    return f"slot.r{rep}.{who}.l{layer}"


def format_scale_name(src: tuple[str, int], dst: tuple[str, int]) -> str:
    """``scale.{a}.l{i}.{b}.l{j}``: the scale on the step from layer ``src`` into ``dst``."""
    _check_who(src[0], dst[0])
    return f"scale.{src[0]}.l{src[1]}.{dst[0]}.l{dst[1]}"


def parse_path_gene_name(name: str) -> PathGeneName | None:
    """The parts of a data-flow gene name, or None when ``name`` is not one."""
    if m := _SLOT_RE.fullmatch(name):
        return PathGeneName("slot", (m.group(2), int(m.group(3))), rep=int(m.group(1)))
    if m := _SCALE_RE.fullmatch(name):
        return PathGeneName(
            "scale", (m.group(3), int(m.group(4))), src=(m.group(1), int(m.group(2)))
        )
    return None
