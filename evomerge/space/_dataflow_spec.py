"""DataflowSpec: the ``dataflow`` search space (layer paths, Sakana's data-flow space) as
written in a run config::

    space:
      type: dataflow
      sources: [style, facts]       # names from models: (a source name, or "base");
                                    # default: every source in models.sources
      # a PS-merged source next to them (the hybrid), merged once when the run starts:
      #   - {name: ps, recipe: ps_merge.yaml}             # a mergekit 'models:' YAML
      #   - {name: ps, run: runs/ps, trial: best}         # a previous run's trial
      embedding: style              # embeddings, final norm, head, tokenizer (default: first)
      repetitions: 2                # r: the sources' M layers repeated r times, T = M*r slots
      order: stacked                # stacked: a's layers, then b's (paper); interleaved: by depth
      fix_ends: true                # the path starts and ends with the embedding source's
                                    # first and last layer (the paper's constraint)
      max_path_length: 12           # optional: keep the slots with the largest indicators
      min_path_length: 1            # a path is never empty
      scales: {search: true, low: 0.5, high: 2.0, init: 1.0}

The genome and how it decodes are described in :mod:`evomerge.space._dataflow`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from evomerge._yaml import validate_model

__all__ = [
    "SOURCE_NAME_PATTERN",
    "DataflowSourceSpec",
    "DataflowSpec",
    "ScaleSpec",
    "default_source_names",
    "load_dataflow_spec",
    "run_problems",
]

SOURCE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_\-]*$"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataflowSourceSpec(_Frozen):
    """A source of the path: a model of the run (``model``: a name from ``models:``), a
    mergekit recipe merged first (``recipe``), or a previous run's trial (``run``)."""

    name: str = Field(pattern=SOURCE_NAME_PATTERN)
    model: str | None = None
    recipe: Path | None = None
    run: Path | None = None
    trial: int | Literal["best"] = "best"

    @model_validator(mode="after")
    def _one(self) -> DataflowSourceSpec:
        given = [k for k in ("model", "recipe", "run") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"source {self.name!r}: give exactly one of model (a name from models:), "
                f"recipe (a mergekit YAML) or run (a previous run directory); got {given or 'none'}"
            )
        if self.trial != "best" and self.run is None:
            raise ValueError(f"source {self.name!r}: trial is only used with run")
        return self


class ScaleSpec(_Frozen):
    """The transition scales: searched in ``[low, high]`` (start ``init``) or all 1."""

    search: bool = True
    low: float = 0.5
    high: float = 2.0
    init: float = 1.0

    @model_validator(mode="after")
    def _bounds(self) -> ScaleSpec:
        problems: list[str] = []
        if not (math.isfinite(self.low) and self.low > 0):
            problems.append(
                f"low={self.low}: a scale must stay positive (a norm cannot undo a sign flip "
                "or a zero); use e.g. low: 0.5"
            )
        if not math.isfinite(self.high) or self.high <= self.low:
            problems.append(f"high={self.high}: need a finite high > low ({self.low})")
        if not (self.low <= self.init <= self.high):
            problems.append(f"init={self.init} is outside [{self.low}, {self.high}]")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class DataflowSpec(_Frozen):
    """A validated data-flow space (not yet bound to models: see ``DataflowSpace``)."""

    type: Literal["dataflow"]
    name: str = "dataflow"
    description: str = ""
    sources: tuple[DataflowSourceSpec, ...] = ()
    embedding: str | None = None
    repetitions: int = 1
    order: Literal["stacked", "interleaved"] = "stacked"
    fix_ends: bool = False
    min_path_length: int = 1
    max_path_length: int | None = None
    scales: ScaleSpec = ScaleSpec()

    @field_validator("sources", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        # "style" is short for {name: style, model: style}
        if isinstance(v, list | tuple):
            return [{"name": s, "model": s} if isinstance(s, str) else s for s in v]
        return v

    @field_validator("repetitions")
    @classmethod
    def _reps(cls, v: int) -> int:
        if v < 1:
            raise ValueError(
                f"repetitions={v}: the sources' layers must appear at least once (r >= 1)"
            )
        return v

    @field_validator("min_path_length")
    @classmethod
    def _min(cls, v: int) -> int:
        if v < 1:
            raise ValueError(
                f"min_path_length={v}: a path could then be empty (no layer at all); use 1 or more"
            )
        return v

    @model_validator(mode="after")
    def _consistent(self) -> DataflowSpec:
        problems: list[str] = []
        if self.max_path_length is not None:
            least = max(self.min_path_length, 2 if self.fix_ends else 1)
            if self.max_path_length < least:
                why = "the two fixed ends" if self.fix_ends and least == 2 else "min_path_length"
                problems.append(
                    f"max_path_length={self.max_path_length}: below {least} ({why}); "
                    "a path could then be empty or impossible"
                )
        names = self.source_names
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            problems.append(f"sources: names must be distinct, {dupes} repeat")
        if self.embedding is not None and names and self.embedding not in names:
            problems.append(
                f"embedding: {self.embedding!r} is not among the sources ({', '.join(names)}); "
                "the embeddings, final norm and head come from one of them"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def source_names(self) -> list[str]:
        """The sources' names as given (empty: every model source, bound later)."""
        return [s.name for s in self.sources]


def load_dataflow_spec(
    data: Mapping[str, Any], *, source: str, base_dir: Path | None = None
) -> DataflowSpec:
    """Validate ``data`` (ConfigError naming ``source`` and every bad field); relative
    ``recipe``/``run`` paths are made absolute against ``base_dir``."""
    spec = validate_model(DataflowSpec, data, source=source)
    if base_dir is None:
        return spec

    def fix(p: Path | None) -> Path | None:
        return p if p is None or p.is_absolute() else Path(base_dir) / p

    sources = tuple(
        s.model_copy(update={"recipe": fix(s.recipe), "run": fix(s.run)}) for s in spec.sources
    )
    return spec.model_copy(update={"sources": sources})


def default_source_names(model_names: Sequence[str]) -> list[str]:
    """The names of a space without ``sources``: the run's source models, cleaned."""
    from evomerge.space._space import safe_source_name

    return [safe_source_name(n) for n in model_names]


def run_problems(
    spec: DataflowSpec, *, model_names: Sequence[str], backend: str | None
) -> list[str]:
    """What a run config gets wrong for this space, each naming its field: a generation
    backend other than ``hf``, a source naming no model of the run, an embedding source
    that is not a source. ``model_names`` are the run's source names (``models.names``
    or the folders' names)."""
    problems: list[str] = []
    if backend is not None and backend != "hf":
        problems.append(
            f"generation.backend: {backend!r} cannot run a data-flow space: a vLLM engine fixes "
            "its layer count (weights, CUDA graphs, KV cache) when it starts, and every path "
            "has its own; use backend: hf, which re-wires one model's layers per trial"
        )
    known = [*model_names, "base"]
    for i, src in enumerate(spec.sources):
        if src.model is not None and src.model not in known:
            problems.append(
                f"space.sources.{i}.model: {src.model!r} is not a model of this run; "
                f"choose from {', '.join(known)}"
            )
    names = spec.source_names or default_source_names(model_names)
    if spec.embedding is not None and spec.embedding not in names:
        problems.append(
            f"space.embedding: {spec.embedding!r} is not among the sources ({', '.join(names)}); "
            "the embeddings, final norm and head come from one of them"
        )
    return problems
