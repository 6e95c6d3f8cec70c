"""Per-source precomputations that do not change between merges of the same pool.

They let :class:`~evomerge.merge.MergeEngine` merge without sorting or drawing random
numbers per trial, and the streaming merge compute exactly the same numbers:

- ``rank``: int32, each element's position in the descending order of ``|delta|`` exactly
  as mergekit sorts it (torch's default sort of the float32 magnitudes on the CPU, whose
  order among equal values is the one mergekit keeps), so TIES keeps ``rank < k``: one
  integer comparison per element, ties included;
- ``ascending_rank``: int32, the position in mergekit's ascending order (breadcrumbs keeps
  ``lo <= ascending_rank < hi``);
- ``row_rank``: int32, the ascending rank of ``|delta|`` within its row (along dim 1;
  1-D tensors are one row; mergekit's sort), for DELLA's rank-dependent keep probabilities;
- ``noise``: uniform integers (int16 values held as int32) from a generator seeded by (seed, tensor, source), so a
  DARE/DELLA mask is ``noise < threshold`` and the same seed always gives the same model;
- ``noise_l1``: for tensors of at least :data:`NOISE_TABLE_MIN` elements, the cumulative L1
  of ``delta`` over noise values (``table[T] = sum |delta| where noise + 32768 < T``), so
  DARE's L1 rescale needs no extra pass;
- ``l1``: ``sum |delta|``; ``slerp``: norms and cosine of ``base`` and ``base + delta``.

All functions are pure; flat tensors follow ``delta``'s row-major (contiguous) layout.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TypeVar

import torch

from evomerge.merge.methods._spec import Need

__all__ = [
    "CHUNK",
    "GPU_CHUNK",
    "NOISE_LEVELS",
    "NOISE_TABLE_MIN",
    "TENSOR_FIELDS",
    "SlerpStats",
    "SourceAux",
    "ascending_rank",
    "build_aux",
    "chunk_size",
    "chunks",
    "l1_norm",
    "magnitude_rank",
    "make_noise",
    "map_sources",
    "noise_l1_table",
    "noise_seed",
    "ranks_of",
    "row_rank",
    "slerp_stats",
    "window_ranks",
]

CHUNK = 1 << 16  # elements per chunk on CPU (N sources' chunks stay in L2 across passes)
GPU_CHUNK = 1 << 24  # on accelerators: few, large launches (kernel launch overhead dominates)
NOISE_LEVELS = 1 << 16  # noise: 65536 equally likely values (int16 range)
#: Tensors this large get a cumulative-L1 table for DARE's rescale (256 KiB per tensor and
#: source, at most a quarter of the tensor's int32 noise); smaller ones sum the kept |delta|
#: in an extra pass per trial, which took a third of a dare_ties trial on a 60M model whose
#: layer matrices (262k-754k elements) were all below the former 1 << 20.
NOISE_TABLE_MIN = 1 << 18
_BIG_CHUNK = 1 << 20  # precomputation chunks (mergekit's slerp statistics use this size too)
#: The :class:`SourceAux` field each tensor-valued precomputation fills.
TENSOR_FIELDS: dict[Need, str] = {
    Need.MAGNITUDE_RANK: "rank",
    Need.ASCENDING_RANK: "ascending_rank",
    Need.ROW_RANK: "row_rank",
    Need.NOISE: "noise",
    Need.NOISE_L1: "noise_l1",
}


@dataclass(frozen=True)
class SlerpStats:
    """Float32 statistics of ``v0 = base`` and ``v1 = base + delta`` (as mergekit computes them)."""

    norm0: float
    norm1: float
    dot: float  # cosine, clamped to [-1, 1]


@dataclass(frozen=True)
class SourceAux:
    """Precomputations for one source's task vector of one tensor (see module docstring)."""

    l1: float | None = None
    rank: torch.Tensor | None = None
    ascending_rank: torch.Tensor | None = None
    row_rank: torch.Tensor | None = None
    noise: torch.Tensor | None = None
    noise_l1: torch.Tensor | None = None
    slerp: SlerpStats | None = None

    def lacks(self, needs: Iterable[Need]) -> bool:
        """Whether a tensor-valued precomputation among ``needs`` is still missing."""
        return any(getattr(self, TENSOR_FIELDS[n]) is None for n in needs if n in TENSOR_FIELDS)

    def nbytes(self) -> int:
        tensors = (getattr(self, field) for field in TENSOR_FIELDS.values())
        return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def chunk_size(device: torch.device) -> int:
    return CHUNK if device.type == "cpu" else GPU_CHUNK


def chunks(numel: int, device: torch.device) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of the chunks the kernels walk a flat tensor on ``device`` in."""
    size = chunk_size(device)
    for s in range(0, numel, size):
        yield s, min(numel, s + size)


_T = TypeVar("_T")


def map_sources(fn: Callable[[int], _T], n: int) -> list[_T]:
    """``[fn(0), ..., fn(n - 1)]``, up to ``torch.get_num_threads()`` of them at once.

    For the per-source precomputations: mergekit's sort and the noise draws are
    single-threaded torch ops that release the GIL, so N sources on N free cores take the
    time of one. With one torch thread (``OMP_NUM_THREADS=1``) this is a plain loop.
    """
    workers = min(n, torch.get_num_threads())
    if workers <= 1:
        return [fn(i) for i in range(n)]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="evomerge-aux") as pool:
        return list(pool.map(fn, range(n)))


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1)  # [numel]


def l1_norm(delta: torch.Tensor) -> float:
    """``sum |delta|`` accumulated chunk by chunk in the tensor's precision (float32 for halves)."""
    flat = _flat(delta)
    total = 0.0
    for s, e in chunks(flat.numel(), flat.device):
        c = flat[s:e]
        if c.dtype in (torch.float16, torch.bfloat16):
            c = c.float()
        total += float(c.abs().sum())  # a cascaded sum, as mergekit's (vector_norm's drifts)
    return total


def _mergekit_sort(delta: torch.Tensor, *, descending: bool) -> torch.Tensor:
    """int64 ``[numel]`` on the CPU: flat indices of ``delta`` by ``|delta|``, sorted as
    mergekit 0.1.5's ``sparsify`` sorts them: float32 magnitudes, torch's default (unstable)
    sort, on the CPU.

    Equal magnitudes come in the order that sort leaves them (it depends on the whole
    tensor), which is what decides the coordinates kept at a cut; computing on the CPU
    gives the same order whatever device the engine runs on.
    """
    mag = _flat(delta).abs().float().cpu()
    # the very calls mergekit makes: TIES argsorts descending, breadcrumbs sorts ascending
    return torch.argsort(mag, descending=True) if descending else torch.sort(mag).indices


def ranks_of(order: torch.Tensor) -> torch.Tensor:
    """int32 ``[numel]``: the inverse permutation, each element's position in ``order``."""
    n, dev = order.numel(), order.device
    rank = torch.empty(n, dtype=torch.int32, device=dev)
    return rank.scatter_(0, order.long(), torch.arange(n, dtype=torch.int32, device=dev))


def magnitude_rank(delta: torch.Tensor) -> torch.Tensor:
    """int32 ``[numel]``: each element's position in mergekit's descending order."""
    return ranks_of(_mergekit_sort(delta, descending=True).to(delta.device))


def ascending_rank(delta: torch.Tensor) -> torch.Tensor:
    """int32 ``[numel]``: each element's position in mergekit's ascending order."""
    return ranks_of(_mergekit_sort(delta, descending=False).to(delta.device))


def window_ranks(delta: torch.Tensor, lo: int, hi: int, *, descending: bool) -> torch.Tensor:
    """int32 ``[numel]`` that is in ``[lo, hi)`` exactly for the elements at positions
    ``[lo, hi)`` of mergekit's order (``lo`` there, ``hi`` elsewhere): what one cut needs of
    :func:`magnitude_rank` / :func:`ascending_rank`, at the cost of the sort alone (a
    one-off merge cuts each task vector once, so it skips the full inverse permutation).
    """
    window = _mergekit_sort(delta, descending=descending)[lo:hi].to(delta.device)
    rank = torch.full((delta.numel(),), hi, dtype=torch.int32, device=delta.device)
    rank[window] = lo
    return rank


def _rows(delta: torch.Tensor) -> torch.Tensor:
    """The view DELLA ranks along dim 1: 1-D (or 0-D) tensors are a single row."""
    if delta.dim() < 2:
        return delta.reshape(1, -1)  # [1, numel]
    return delta


def row_rank(delta: torch.Tensor) -> torch.Tensor:
    """int32 ``[numel]``: the ascending rank (0-based) of ``|delta|`` along dim 1, ties in
    the order of mergekit's ``della_magprune`` sort (torch's default sort, delta's dtype)."""
    mag = _rows(delta).abs()
    order = torch.argsort(mag, dim=1)
    del mag
    ar = torch.arange(order.shape[1], dtype=torch.int32, device=order.device)
    ar = ar.view(1, -1, *([1] * (order.dim() - 2))).expand(order.shape)  # broadcast along dim 1
    rank = torch.empty(order.shape, dtype=torch.int32, device=order.device)
    rank.scatter_(1, order, ar)
    return rank.reshape(-1)  # [numel]


def row_length(shape: Sequence[int]) -> int:
    """The length of DELLA's rows for a tensor of ``shape`` (dim 1, or everything when 1-D)."""
    if len(shape) < 2:
        return math.prod(shape)
    return int(shape[1])


def noise_seed(seed: int, tensor_name: str, source_key: str) -> int:
    """A 63-bit generator seed for (seed, tensor, source); stable across runs and platforms."""
    h = hashlib.blake2b(f"{int(seed)}\0{tensor_name}\0{source_key}".encode(), digest_size=8)
    return int.from_bytes(h.digest(), "little") & ((1 << 63) - 1)


def make_noise(
    numel: int, *, seed: int, tensor_name: str, source_key: str, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """``[numel]`` integers uniform over [-32768, 32767] (65536 levels), drawn on the CPU (same
    on every device). Drawn as int16, held as int32: the compiled merge kernel vectorizes
    int32 comparisons but not int16 ones (8x slower there), so DARE keeps the same values
    at 4 bytes per element."""
    gen = torch.Generator(device="cpu").manual_seed(noise_seed(seed, tensor_name, source_key))
    noise = torch.randint(
        -(NOISE_LEVELS // 2), NOISE_LEVELS // 2, (numel,), generator=gen, dtype=torch.int16
    )
    return noise.to(device=device, dtype=torch.int32)


def noise_l1_table(delta: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """float32 ``[65537]``: ``table[T] = sum |delta|`` over elements with ``noise + 32768 < T``.

    Histogrammed in float64 chunk by chunk, so building it takes bounded scratch memory.
    """
    flat = _flat(delta)
    hist = torch.zeros(NOISE_LEVELS, dtype=torch.float64, device=flat.device)
    for s in range(0, flat.numel(), _BIG_CHUNK):
        bins = noise[s : s + _BIG_CHUNK].to(torch.int64) + NOISE_LEVELS // 2
        hist += torch.bincount(
            bins, weights=flat[s : s + _BIG_CHUNK].abs().double(), minlength=NOISE_LEVELS
        )
    table = torch.zeros(NOISE_LEVELS + 1, dtype=torch.float64, device=flat.device)
    torch.cumsum(hist, 0, out=table[1:])
    return table.float()


def slerp_stats(base: torch.Tensor, delta: torch.Tensor) -> SlerpStats:
    """Norms of ``v0 = base``, ``v1 = base + delta`` and their cosine, in float32 as mergekit.

    Norms are norms of per-chunk norms; the cosine sums products of normalized chunks.
    """
    work = torch.float64 if base.dtype == torch.float64 else torch.float32
    b, d = _flat(base), _flat(delta)
    n0_parts, n1_parts = [], []
    for s in range(0, b.numel(), _BIG_CHUNK):
        x = b[s : s + _BIG_CHUNK].to(work)
        y = x + d[s : s + _BIG_CHUNK].to(work)
        n0_parts.append(torch.linalg.vector_norm(x))
        n1_parts.append(torch.linalg.vector_norm(y))
    if not n0_parts:
        return SlerpStats(1.0, 1.0, 1.0)
    n0 = torch.linalg.vector_norm(torch.stack(n0_parts))
    n1 = torch.linalg.vector_norm(torch.stack(n1_parts))
    n0 = torch.where(n0 > 1e-8, n0, torch.ones_like(n0))
    n1 = torch.where(n1 > 1e-8, n1, torch.ones_like(n1))
    dots = []
    for s in range(0, b.numel(), _BIG_CHUNK):
        x = b[s : s + _BIG_CHUNK].to(work)
        y = x + d[s : s + _BIG_CHUNK].to(work)
        dots.append(((x / n0) * (y / n1)).sum())
    dot = torch.stack(dots).sum().clamp(-1, 1)
    return SlerpStats(float(n0), float(n1), float(dot))


def build_aux(
    needs: Iterable[Need],
    base: torch.Tensor,
    delta: torch.Tensor,
    *,
    seed: int,
    tensor_name: str,
    source_key: str,
    previous: SourceAux | None = None,
) -> SourceAux:
    """Compute the precomputations ``needs`` for one source's ``delta`` of ``tensor_name``.

    ``previous`` keeps what was already computed (only the missing entries are added).
    ``source_key`` identifies the source for the noise (e.g. its model reference).
    """
    aux = previous or SourceAux()
    needs = set(needs)
    if aux.l1 is None:
        aux = replace(aux, l1=l1_norm(delta))
    if Need.MAGNITUDE_RANK in needs and aux.rank is None:
        aux = replace(aux, rank=magnitude_rank(delta))
    if Need.ASCENDING_RANK in needs and aux.ascending_rank is None:
        aux = replace(aux, ascending_rank=ascending_rank(delta))
    if Need.ROW_RANK in needs and aux.row_rank is None:
        aux = replace(aux, row_rank=row_rank(delta))
    if (Need.NOISE in needs or Need.NOISE_L1 in needs) and aux.noise is None:
        noise = make_noise(
            delta.numel(),
            seed=seed,
            tensor_name=tensor_name,
            source_key=source_key,
            device=delta.device,
        )
        aux = replace(aux, noise=noise)
    if Need.NOISE_L1 in needs and aux.noise_l1 is None and delta.numel() >= NOISE_TABLE_MIN:
        assert aux.noise is not None
        aux = replace(aux, noise_l1=noise_l1_table(delta, aux.noise))
    if Need.SLERP_STATS in needs and aux.slerp is None:
        aux = replace(aux, slerp=slerp_stats(base, delta))
    return aux
