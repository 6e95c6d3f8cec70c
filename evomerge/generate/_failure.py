"""Telling a generation backend that is gone from one failed generation.

A dead backend (vLLM's engine process died, the CUDA context was lost after a device-side
error) fails every later call the same way: it is an infrastructure failure
(:class:`GeneratorDeadError`), and the search stops instead of spending its trials. Any
other error is the candidate's (:class:`GenerationError`).
"""

from __future__ import annotations

import torch

from evomerge.exceptions import GenerationError, GeneratorDeadError

__all__ = ["backend_dead", "generation_failure"]


def _engine_dead_types() -> tuple[type[BaseException], ...]:
    try:  # vLLM is optional; its V1 engine raises this once the engine core process is gone
        from vllm.v1.engine.exceptions import EngineDeadError
    except ImportError:
        return ()
    return (EngineDeadError,)


def backend_dead(err: BaseException) -> bool:
    """True when ``err`` means the backend cannot generate any more: vLLM's
    ``EngineDeadError``, or a CUDA error (``torch.AcceleratorError``, "CUDA error: ...")
    other than running out of memory."""
    if isinstance(err, _engine_dead_types()):
        return True
    if isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err):
        return False  # a bigger candidate or batch: not the backend's death
    accelerator = getattr(torch, "AcceleratorError", None)
    if accelerator is not None and isinstance(err, accelerator):
        return True
    return isinstance(err, RuntimeError) and str(err).startswith("CUDA error")


def generation_failure(message: str, err: BaseException) -> GenerationError:
    """The error to raise (``from err``) for ``err`` caught in a backend: a
    :class:`GeneratorDeadError` when :func:`backend_dead`, else a :class:`GenerationError`;
    ``message`` says what was being done."""
    if backend_dead(err):
        return GeneratorDeadError(
            f"{message}: the generation backend is gone ({type(err).__name__}: {err}); "
            "restart the search (it resumes) once the device or engine is healthy"
        )
    return GenerationError(f"{message}: {err}")
