"""Scratch buffers reused across chunks, tensors and merges, and the output writer."""

from __future__ import annotations

import math

import torch

from evomerge.exceptions import MergeError

__all__ = ["OutWriter", "Workspace"]


class Workspace:
    """Named flat scratch buffers that grow on demand and are reused.

    ``compiled``: whether kernels may use torch.compile'd code (the fused consensus). Its
    first use in a process pays a compile: the engine, which merges many times, always
    does; a one-off merge only when it is large enough to win that back.
    Not thread-safe: one workspace per thread (the engine owns one).
    """

    def __init__(self, *, compiled: bool = True) -> None:
        self.compiled = compiled
        self._bufs: dict[tuple[str, torch.dtype, torch.device], torch.Tensor] = {}
        self._views: dict[tuple[str, tuple[int, ...], torch.dtype, torch.device], torch.Tensor] = {}

    def get(
        self, key: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """A tensor of ``shape`` (uninitialized), a view of the buffer ``key``."""
        vk = (key, shape, dtype, device)
        view = self._views.get(vk)
        if view is not None:
            return view
        numel = math.prod(shape)
        k = (key, dtype, device)
        buf = self._bufs.get(k)
        if buf is None or buf.numel() < numel:
            buf = torch.empty(numel, dtype=dtype, device=device)
            self._bufs[k] = buf
            self._views = {v: t for v, t in self._views.items() if v[0] != key or v[2:] != k[1:]}
        view = self._views[vk] = buf[:numel].view(shape)
        return view

    def zero(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A cached 0-dim zero of ``dtype`` (for ``torch.where(..., out=...)``)."""
        k = ("<zero>", dtype, device)
        z = self._bufs.get(k)
        if z is None:
            z = self._bufs[k] = torch.zeros((), dtype=dtype, device=device)
        return z

    def scalar(self, value: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A cached 0-dim tensor set to ``value`` (valid until the next call with this dtype)."""
        k = ("<scalar>", dtype, device)
        t = self._bufs.get(k)
        if t is None:
            t = self._bufs[k] = torch.empty((), dtype=dtype, device=device)
        return t.fill_(value)

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self._bufs.values())


class OutWriter:
    """Writes chunks of a result into ``out`` (allocated like ``like`` when None).

    When ``out`` has the compute dtype and is contiguous, kernels write into its chunks
    directly (:meth:`target`); otherwise they compute into scratch and :meth:`store` casts.
    """

    def __init__(
        self, out: torch.Tensor | None, like: torch.Tensor, dtype: torch.dtype, ws: Workspace
    ) -> None:
        if out is None:
            out = torch.empty(like.shape, dtype=like.dtype, device=like.device)
        elif tuple(out.shape) != tuple(like.shape):
            raise MergeError(
                f"out has shape {tuple(out.shape)} but the merged tensor has shape {tuple(like.shape)}"
            )
        elif not out.is_floating_point():
            raise MergeError(f"out must be a floating-point tensor, got {out.dtype}")
        self.out = out
        self.dtype = dtype
        self._ws = ws
        self._device = like.device
        self._direct = out.dtype == dtype and out.is_contiguous() and out.device == like.device
        self._flat = out.view(-1) if out.is_contiguous() else None  # [numel]
        self._full: torch.Tensor | None = None
        if self._flat is None:  # a strided out: compute the whole tensor, copy at the end
            self._full = torch.empty(like.numel(), dtype=dtype, device=like.device)

    def target(self, start: int, stop: int) -> torch.Tensor:
        """Where to compute elements ``[start, stop)`` (in the compute dtype)."""
        if self._direct:
            assert self._flat is not None
            return self._flat[start:stop]
        if self._full is not None:
            return self._full[start:stop]
        return self._ws.get("out", (stop - start,), self.dtype, self._device)

    def store(self, start: int, stop: int, chunk: torch.Tensor) -> None:
        """Finish elements ``[start, stop)`` computed into ``target(start, stop)``."""
        if self._direct or self._full is not None:
            return
        assert self._flat is not None
        self._flat[start:stop].copy_(chunk)

    def finish(self) -> torch.Tensor:
        if self._full is not None:
            self.out.copy_(self._full.view(self.out.shape))
        return self.out
