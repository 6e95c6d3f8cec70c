"""MergeEngine: many merges of one pool, in memory, without disk I/O per merge."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from functools import partial
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from evomerge.exceptions import MemoryBudgetError, MergeError
from evomerge.merge._cache import PrecomputeCache
from evomerge.merge._memory import available_bytes, estimate_resident_bytes, format_bytes
from evomerge.merge._resolve import plan_merge
from evomerge.merge._stream import load_deltas, source_keys
from evomerge.merge.methods import Need, SourceAux, Workspace, build_aux, get_method, map_sources
from evomerge.merge.recipe import MergeRecipe

if TYPE_CHECKING:
    from evomerge.pool import ModelPool

logger = logging.getLogger(__name__)

__all__ = ["MergeEngine"]


def _needs(methods: Iterable[str]) -> frozenset[Need]:
    out: set[Need] = set()
    for m in methods:
        out |= get_method(m).needs
    return frozenset(out)


def _select(stacked: torch.Tensor, sources: Sequence[int]) -> torch.Tensor | list[torch.Tensor]:
    """Rows ``sources`` of ``stacked`` [N, ...]: a strided view when they are evenly spaced."""
    n = len(sources)
    if n == 0:
        return stacked[:0]
    step = sources[1] - sources[0] if n > 1 else 1
    if step > 0 and all(b - a == step for a, b in pairwise(sources)):
        return stacked[sources[0] :: step][:n]  # [n, ...] view
    return [stacked[i] for i in sources]


class MergeEngine:
    """Keeps a pool's base and task vectors resident on a device and merges recipes into them.

    Construction loads, for every tensor of the pool, the base and the N task vectors
    ``source_i - base`` in ``dtype`` on ``device``, and precomputes what the declared
    ``methods`` need: per-tensor magnitude orders, sorted as mergekit sorts them (TIES
    descending, breadcrumbs ascending: a cut is a lookup, no sort per merge, and ties at a
    cut keep mergekit's coordinates), per-row ranks (DELLA), integer noise drawn from ``seed`` (DARE,
    DELLA: the same recipe always gives the same model, so trials are comparable) and
    DARE's L1 tables. With ``methods=None`` these are computed on first use instead.

    Memory bound (``estimate_bytes``), with ``n`` the pool's parameter count, ``N`` its
    sources and ``b`` the bytes of ``dtype``::

        n * b * (N + 2)              base + N task vectors + the output buffers
      + n * N * 4                    magnitude order   (ties)
      + n * N * 4                    ascending order   (breadcrumbs, breadcrumbs_ties)
      + n * N * 4                    row ranks         (della, della_linear)
      + n * N * 4                    noise             (dare_*, della*; int32)
      + N * 256 KiB per tensor of >= 2^20 elements     (dare_*)
      + (N + 8) * 8 * chunk          scratch (chunk: 2^16 elements on CPU, 2^24 on GPU)

    Construction raises :class:`MemoryBudgetError` before loading anything if this exceeds
    ``max_bytes`` (default: the device's free memory minus 10%, at least 1 GiB).

    ``cache_dir``: keep the precomputations there (:class:`~evomerge.merge.PrecomputeCache`,
    keyed by the task vectors' content), so that other engines over the same models (the
    other workers of a search, a resumed run) read them instead of sorting again; engines
    built at the same time split the work between them.

    :meth:`materialize` validates the recipe against the pool (every problem at once, as
    :class:`MergeError`) and writes the merge into ``out`` (or buffers the engine allocates
    once and reuses). It computes in the engine's ``dtype`` (the recipe's ``dtype`` is not
    used) and gives the same tensors as :func:`iter_merged_tensors` for the same recipe and
    seed when that dtype matches: bit for bit with the same kernels (a one-off merge smaller
    than ``ONE_OFF_COMPILE_MIN`` skips the compiled consensus kernel for the eager one,
    which runs the same arithmetic). Not thread-safe: one engine per worker.
    """

    def __init__(
        self,
        pool: ModelPool,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
        methods: Sequence[str] | None = None,
        max_bytes: int | None = None,
        cache_dir: str | Path | None = None,
        progress: bool = False,
    ) -> None:
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise MergeError(
                f"dtype must be a floating-point torch.dtype (e.g. torch.bfloat16), got {dtype!r}"
            )
        if isinstance(methods, str):
            raise MergeError(
                f"methods must be a list of method names, got the string {methods!r}; use [{methods!r}]"
            )
        self.pool = pool
        self.device = torch.device(device)
        self.dtype = dtype
        self.seed = int(seed)
        self.methods: tuple[str, ...] | None = (
            tuple(get_method(m).name for m in methods) if methods is not None else None
        )
        self._needs: set[Need] = set(_needs(self.methods or ()))
        self._budget = max_bytes if max_bytes is not None else available_bytes(self.device)
        self._check_budget(self._needs, "")
        self._keys = source_keys(pool)
        self._ws = Workspace()
        self._out: dict[str, torch.Tensor] | None = None
        self._base: dict[str, torch.Tensor] = {}
        self._deltas: dict[str, torch.Tensor] = {}
        self._aux: dict[str, list[SourceAux]] = {}
        self.cache = PrecomputeCache(cache_dir) if cache_dir is not None else None
        self._load(progress)

    # -- construction ---------------------------------------------------------------------

    @staticmethod
    def estimate_bytes(
        pool: ModelPool,
        dtype: torch.dtype,
        methods: Sequence[str] | None,
        n_sources: int,
        *,
        device: str | torch.device = "cpu",
    ) -> int:
        """Upper bound of the bytes an engine over ``pool`` keeps resident (see the class docstring)."""
        return estimate_resident_bytes(
            pool, dtype, _needs(methods or ()), n_sources, torch.device(device)
        )

    def _check_budget(self, needs: set[Need], what: str) -> None:
        need = estimate_resident_bytes(
            self.pool, self.dtype, needs, self.pool.num_sources, self.device
        )
        if self._budget is not None and need > self._budget:
            raise MemoryBudgetError(
                f"MergeEngine{what} needs about {format_bytes(need)} on {self.device} (base + "
                f"{self.pool.num_sources} task vectors in {self.dtype}"
                f"{' + ' + ', '.join(sorted(n.value for n in needs)) if needs else ''}) but the budget is "
                f"{format_bytes(self._budget)}. Use a smaller dtype (e.g. torch.bfloat16), fewer sources, "
                "fewer methods, another device, or raise max_bytes."
            )

    def _load(self, progress: bool) -> None:
        from tqdm.auto import tqdm

        start = time.perf_counter()
        sources = list(range(self.pool.num_sources))
        deferred: list[tuple[str, int]] = []
        with torch.no_grad():
            for name in tqdm(
                self.pool.tensor_names,
                desc="loading merge engine",
                unit="tensor",
                disable=not progress,
            ):
                info = self.pool.info(name)
                if not info.dtype.is_floating_point:
                    self._base[name] = self.pool.base_tensor(
                        name, dtype=info.dtype, device=self.device
                    )
                    continue
                base = self.pool.base_tensor(
                    name, dtype=self.dtype, device=self.device
                ).contiguous()
                self._base[name] = base
                self._deltas[name] = load_deltas(self.pool, name, sources, base)  # [N, ...]
                built = map_sources(
                    partial(self._build, name, previous=None, wait=False), len(sources)
                )
                self._aux[name] = [aux for aux, _ in built]
                # another process is computing what is not complete: read it later
                deferred += [(name, i) for i, (_, complete) in enumerate(built) if not complete]
            for name, i in deferred:
                self._aux[name][i], _ = self._build(name, i, self._aux[name][i], wait=True)
        logger.info(
            "merge engine: %d tensors x %d sources resident on %s in %s (%.1fs%s)",
            len(self._base),
            self.pool.num_sources,
            self.device,
            self.dtype,
            time.perf_counter() - start,
            ""
            if self.cache is None
            else f"; {self.cache.hits} precomputations read from {self.cache.root}, "
            f"{self.cache.misses} computed",
        )

    def _build(
        self, name: str, i: int, previous: SourceAux | None, *, wait: bool = True
    ) -> tuple[SourceAux, bool]:
        """Source ``i``'s precomputations for tensor ``name``: ``(aux, complete)``."""
        base, delta, key = self._base[name], self._deltas[name][i], self._keys[i]
        if self.cache is None:
            aux = build_aux(
                self._needs,
                base,
                delta,
                seed=self.seed,
                tensor_name=name,
                source_key=key,
                previous=previous,
            )
            return aux, True
        return self.cache.fill(
            self._needs,
            base,
            delta,
            seed=self.seed,
            tensor_name=name,
            source_key=key,
            previous=previous,
            wait=wait,
        )

    def _ensure_needs(self, needs: Iterable[Need], method: str) -> None:
        missing = set(needs) - self._needs
        if not missing:
            return
        if self.methods is not None:
            raise MergeError(
                f"this MergeEngine was built for methods {list(self.methods)}; recipe uses {method!r}. "
                f"Build it with methods=[..., {method!r}]"
            )
        self._check_budget(self._needs | missing, f" with {method!r}")
        self._needs |= missing
        with torch.no_grad():
            for name, auxes in self._aux.items():

                def extend(i: int, name: str = name, auxes: list[SourceAux] = auxes) -> SourceAux:
                    return self._build(name, i, auxes[i])[0]

                self._aux[name] = map_sources(extend, len(auxes))

    # -- merging ------------------------------------------------------------------------

    @property
    def tensor_names(self) -> list[str]:
        return list(self._base)

    def allocate_out(self) -> dict[str, torch.Tensor]:
        """Fresh output tensors (the engine's dtype and device) for :meth:`materialize`."""
        return {
            name: torch.empty_like(t) if name in self._deltas else t.clone()
            for name, t in self._base.items()
        }

    def materialize(
        self, recipe: MergeRecipe, out: dict[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """Write the merge ``recipe`` describes into ``out`` and return it.

        ``out`` maps every tensor name to a tensor of its shape (any floating dtype, any
        device: e.g. a model's parameters); None uses buffers the engine allocated on the
        first call and reuses (each call overwrites the previous result).

        Raises:
            UnknownMethodError: the recipe's method is not registered.
            MergeError: the recipe does not fit the pool, or ``out`` lacks a tensor.
            MemoryBudgetError: a method's first use (``methods=None``) would exceed the budget.
        """
        plan = plan_merge(recipe, self.pool)
        method = plan.method
        self._ensure_needs(method.needs, method.name)
        if plan.dtype is not None and plan.dtype != self.dtype:
            logger.debug(
                "recipe dtype %s ignored: the engine computes in %s", plan.dtype, self.dtype
            )
        if out is None:
            if self._out is None:
                self._out = self.allocate_out()
            out = self._out
        else:
            missing = [n for n in self._base if n not in out]
            if missing:
                raise MergeError(
                    f"out lacks {len(missing)} tensor(s), e.g. {missing[:3]}; pass a tensor for every name"
                )
        with torch.no_grad():
            for tp in plan.tensors:
                name = tp.name
                if name not in self._deltas:  # a non-floating buffer: the base's
                    if out[name] is not self._base[name]:
                        out[name].copy_(self._base[name])
                    continue
                deltas = _select(self._deltas[name], tp.sources)
                aux = [self._aux[name][i] for i in tp.sources]
                method.fn(
                    self._base[name],
                    deltas,
                    tp.args,
                    aux=aux,
                    out=out[name],
                    workspace=self._ws,
                    seed=self.seed,
                    tensor_name=name,
                )
        return out

    def nbytes(self) -> int:
        """Bytes held now: base, task vectors, precomputations, output buffers and scratch."""
        total = sum(t.numel() * t.element_size() for t in self._base.values())
        total += sum(t.numel() * t.element_size() for t in self._deltas.values())
        total += sum(a.nbytes() for auxes in self._aux.values() for a in auxes)
        if self._out is not None:
            total += sum(t.numel() * t.element_size() for t in self._out.values())
        return total + self._ws.nbytes()

    def __repr__(self) -> str:
        return (
            f"MergeEngine(pool={self.pool!r}, device={str(self.device)!r}, dtype={self.dtype}, seed={self.seed}, "
            f"methods={list(self.methods) if self.methods is not None else None})"
        )
