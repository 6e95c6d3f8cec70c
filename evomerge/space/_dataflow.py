"""DataflowSpace: the genome ``x in R^d`` <-> a :class:`~evomerge.merge.path.LayerPath`.

The slots: the sources' layers (M in total) repeated ``r`` times, T = M*r of them, in a
fixed order: ``stacked`` (rep 0: all of a's layers, then all of b's; rep 1: again) as in
the paper, or ``interleaved`` (rep 0: a[0] b[0] a[1] b[1] ...). With ``fix_ends`` the
embedding source's first layer opens and its last layer closes every path; those two are
not searched (they stand outside the ordered slots). Genes, in order (optuna names)::

    slot.r{rep}.{source}.l{layer}        one per searched slot, in [-1, 1]: on when > 0
    scale.{src}.l{i}.{src}.l{j}          when scales are searched: W[i, j], the factor on
                                         the hidden state entering layer j from layer i

A scale gene exists for every ordered pair of layers that can follow one another on a path
except a model's natural step (layer i to i+1 of the same source, always 1), so the start
point is exactly the embedding source. Decoding keeps the "on" slots in slot order; when
fewer than ``min_path_length`` are on, the off slots with the largest indicators are
added, and beyond ``max_path_length`` only the largest are kept (ties: earlier slot).
Slot 0 is never scaled (nothing precedes it but the embedding); scale genes outside their
bounds (never sampled by optuna) are clipped to them, so a scale is always positive.

The start point ``x0`` encodes the embedding source's own layers in order (indicators at
+/-0.5, scales at their ``init``). :meth:`encode` gives the canonical genome of a path
(:meth:`decode` of it is that path), or a SearchError saying why the space cannot express it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from evomerge.exceptions import SearchError
from evomerge.merge.path import LayerPath, PathSlot, PathSource
from evomerge.space._dataflow_spec import SOURCE_NAME_PATTERN, DataflowSpec
from evomerge.space._genome import Genome
from evomerge.space._names import format_scale_name, format_slot_name
from evomerge.space._spec import Bounds

__all__ = ["DataflowSpace", "Gene", "Layer"]

_NAME_RE = re.compile(SOURCE_NAME_PATTERN)
_ON, _OFF = 0.5, -0.5
_INDICATOR = Bounds(low=-1.0, high=1.0, init=0.0)

Layer = tuple[str, int]  # (source name, layer index)


@dataclass(frozen=True)
class Gene:
    """One coordinate: a slot's indicator (``layer`` set, ``rep`` its repetition) or a
    transition scale (``src`` -> ``layer``)."""

    name: str
    kind: str  # "slot" | "scale"
    bounds: Bounds
    layer: Layer
    rep: int = 0
    src: Layer | None = None


class DataflowSpace(Genome):
    """A :class:`DataflowSpec` bound to its sources (``name -> PathSource``, in order) and
    their layer counts. Immutable and thread-safe."""

    dimensions: tuple[Gene, ...]
    spec: DataflowSpec

    def __init__(
        self,
        *,
        spec: DataflowSpec,
        sources: Mapping[str, PathSource],
        num_layers: Mapping[str, int],
    ) -> None:
        if not sources:
            raise SearchError("a data-flow space needs at least one source, got none")
        bad = [n for n in sources if not _NAME_RE.fullmatch(n)]
        if bad:
            raise SearchError(
                f"source names {bad}: use letters, digits, _ and - (they name genome parameters)"
            )
        missing = [n for n in sources if num_layers.get(n, 0) < 1]
        if missing:
            raise SearchError(f"no layer count (>= 1) for source(s) {missing}")
        self.spec = spec
        self.sources = dict(sources)
        self.num_layers = {n: int(num_layers[n]) for n in sources}
        self.embedding = spec.embedding or next(iter(sources))
        if self.embedding not in sources:
            raise SearchError(
                f"embedding: {self.embedding!r} is not among the sources ({', '.join(sources)})"
            )
        last = self.num_layers[self.embedding] - 1
        self.first: Layer | None = (self.embedding, 0) if spec.fix_ends else None
        self.last: Layer | None = (self.embedding, last) if spec.fix_ends else None
        self.slots: list[tuple[int, Layer]] = self._slot_order()
        genes = [
            Gene(format_slot_name(rep, s, i), "slot", _INDICATOR, (s, i), rep=rep)
            for rep, (s, i) in self.slots
        ]
        if spec.scales.search:
            b = Bounds(low=spec.scales.low, high=spec.scales.high, init=spec.scales.init)
            for a, c in self._transitions():
                genes.append(Gene(format_scale_name(a, c), "scale", b, c, src=a))
        self.dimensions = tuple(genes)
        self._scale_index = {(g.src, g.layer): k for k, g in enumerate(genes) if g.kind == "scale"}

    # -- geometry -------------------------------------------------------------------

    def _slot_order(self) -> list[tuple[int, Layer]]:
        names, r = list(self.sources), self.spec.repetitions
        out: list[tuple[int, Layer]] = []
        for rep in range(r):
            if self.spec.order == "stacked":
                out += [(rep, (s, i)) for s in names for i in range(self.num_layers[s])]
            else:
                depth = max(self.num_layers.values())
                out += [
                    (rep, (s, i)) for i in range(depth) for s in names if i < self.num_layers[s]
                ]
        fixed = {(0, self.first), (r - 1, self.last)}
        return [x for x in out if x not in fixed]

    def _transitions(self) -> list[tuple[Layer, Layer]]:
        """Ordered pairs (a, b) that can be consecutive on a path, natural steps excluded."""
        seq: list[Layer] = [layer for _, layer in self.slots]
        seq = ([self.first] if self.first else []) + seq + ([self.last] if self.last else [])
        seen: dict[tuple[Layer, Layer], None] = {}
        for i, a in enumerate(seq):
            for b in seq[i + 1 :]:
                if not _natural(a, b):
                    seen.setdefault((a, b), None)
        return list(seen)

    def start_path(self) -> LayerPath:
        """The embedding source's own layers in order."""
        n = self.num_layers[self.embedding]
        slots = [PathSlot(source=self.embedding, layer=i) for i in range(n)]
        return LayerPath(sources=self.sources, embedding=self.embedding, slots=tuple(slots))

    def x0(self) -> np.ndarray:
        """The start point's genome. When the start path breaks the length limits, its
        indicators are set anyway and decoding adds or drops slots as for any genome."""
        return self._encode(self.start_path(), check_length=False)

    # -- decode / encode ------------------------------------------------------------

    def decode(self, x: Sequence[float] | np.ndarray) -> LayerPath:
        """The path of genome ``x`` (see the module docstring)."""
        arr = self._check(x)
        n_slots = len(self.slots)
        ind = arr[:n_slots]
        fixed = 2 if self.spec.fix_ends else 0
        rank = sorted(range(n_slots), key=lambda t: (-ind[t], t))  # largest first
        on = {t for t in range(n_slots) if ind[t] > 0}
        need = max(0, self.spec.min_path_length - fixed)
        for t in rank:
            if len(on) >= need:
                break
            on.add(t)
        if self.spec.max_path_length is not None:
            room = self.spec.max_path_length - fixed
            if len(on) > room:
                on = set([t for t in rank if t in on][:room])
        layers = [self.slots[t][1] for t in sorted(on)]
        if self.first is not None and self.last is not None:
            layers = [self.first, *layers, self.last]
        slots: list[PathSlot] = []
        for k, layer in enumerate(layers):
            scale = 1.0
            if k > 0 and (gene := self._scale_index.get((layers[k - 1], layer))) is not None:
                b = self.dimensions[gene].bounds
                scale = float(min(max(arr[gene], b.low), b.high))
            slots.append(PathSlot(source=layer[0], layer=layer[1], scale=scale))
        return LayerPath(sources=self.sources, embedding=self.embedding, slots=tuple(slots))

    def encode(self, path: LayerPath) -> np.ndarray:
        """The canonical genome of ``path``; SearchError when the space cannot express it."""
        return self._encode(path, check_length=True)

    def _encode(self, path: LayerPath, *, check_length: bool) -> np.ndarray:
        if path.embedding != self.embedding:
            raise SearchError(
                f"path embedding {path.embedding!r}, the space uses {self.embedding!r}"
            )
        unknown = sorted({s.source for s in path.slots} - set(self.sources))
        if unknown:
            raise SearchError(f"path uses sources {unknown} that the space lacks")
        layers: list[Layer] = [(s.source, s.layer) for s in path.slots]
        n = len(layers)
        lo, hi = self.spec.min_path_length, self.spec.max_path_length
        if check_length and (n < lo or (hi is not None and n > hi)):
            raise SearchError(f"path has {n} layers, the space allows {lo}..{hi or 'any'}")
        inner = layers
        if self.first is not None and self.last is not None:
            if n < 2 or layers[0] != self.first or layers[-1] != self.last:
                raise SearchError(
                    f"with fix_ends the path must start with {self.first} and end with {self.last}"
                )
            inner = layers[1:-1]
        x = np.array([g.bounds.start for g in self.dimensions])
        x[: len(self.slots)] = _OFF
        t = 0
        for layer in inner:
            while t < len(self.slots) and self.slots[t][1] != layer:
                t += 1
            if t == len(self.slots):
                raise SearchError(
                    f"path step {layer} has no free slot after the previous steps: "
                    f"{self.spec.repetitions} repetition(s) in {self.spec.order} order cannot "
                    "express this path; raise repetitions"
                )
            x[t] = _ON
            t += 1
        set_by: dict[int, float] = {}
        for k in range(1, n):
            scale = path.slots[k].scale
            gene = self._scale_index.get((layers[k - 1], layers[k]))
            if gene is None:
                if scale != 1.0:
                    raise SearchError(
                        f"slot {k}: scale {scale} on the step {layers[k - 1]} -> {layers[k]}, "
                        "which this space does not scale (a natural step, or scales not searched)"
                    )
                continue
            if gene in set_by and set_by[gene] != scale:
                raise SearchError(
                    f"slot {k}: the step {layers[k - 1]} -> {layers[k]} occurs twice with different "
                    f"scales ({set_by[gene]} and {scale}); one W[i, j] serves both"
                )
            set_by[gene] = scale
            x[gene] = scale
        if path.slots[0].scale != 1.0:
            raise SearchError(
                f"slot 0: scale {path.slots[0].scale}; the first slot is never scaled"
            )
        return x


def _natural(a: Layer, b: Layer) -> bool:
    return a[0] == b[0] and b[1] == a[1] + 1
