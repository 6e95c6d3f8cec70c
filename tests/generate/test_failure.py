"""A dead generation backend is an infrastructure failure; a failed generation is not."""

from __future__ import annotations

import pytest
import torch

from evomerge.exceptions import GenerationError, GeneratorDeadError, is_infrastructure
from evomerge.generate._failure import backend_dead, generation_failure


def test_a_lost_cuda_context_is_a_dead_backend() -> None:
    err = torch.AcceleratorError("CUDA error: an illegal memory access was encountered")
    assert backend_dead(err)
    wrapped = generation_failure("hf generate failed on a batch of 2 prompt(s)", err)
    assert isinstance(wrapped, GeneratorDeadError) and is_infrastructure(wrapped)
    assert "illegal memory access" in str(wrapped) and "resumes" in str(wrapped)


def test_out_of_memory_and_bad_input_are_the_candidates_failures() -> None:
    for err in (
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("probability tensor contains either `inf`, `nan` or element < 0"),
        ValueError("Input length of input_ids is 9000, but max_length is 4096"),
    ):
        wrapped = generation_failure("hf generate failed", err)
        assert type(wrapped) is GenerationError and not is_infrastructure(wrapped), err


def test_vllm_engine_death_is_a_dead_backend() -> None:
    exceptions = pytest.importorskip("vllm.v1.engine.exceptions")
    err = exceptions.EngineDeadError()
    assert isinstance(generation_failure("vLLM generate failed", err), GeneratorDeadError)
