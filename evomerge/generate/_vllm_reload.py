"""How new weights reach a live ``vllm.LLM``: chosen once per engine from what the
installed vLLM offers (feature detection, not version numbers).

``reload_weights`` (the supported path; vLLM 0.32 has it): the worker method
``reload_weights(weights_iterator=..., is_checkpoint_format=True)``, reached with
``LLM.collective_rpc("reload_weights", kwargs=...)``. vLLM loads the checkpoint-format
(HF-named) tensors layer by layer and re-runs each layer's post-load processing: packing
q/k/v and gate/up, and the kernels' repacking (always on the CPU build; on GPUs for
quantized and some fused layers). The RPC names a method and carries tensors, so it
needs no pickled callables: it works with in-process and multiprocess engines alike.

One gap, found on vLLM 0.32's CPU build: a tied LM head is the embedding's parameter
under a second module, which receives no weights of its own, so the reload leaves the
head's prepacked GEMM (built from the old embedding) in place and the logits stale.
After reloading a model with tied embeddings, :func:`refresh_tied_heads` re-runs the
post-load processing of every module whose weight another module owns (a no-op on CUDA
for unquantized heads). It runs in the worker through ``LLM.apply_model``.

Legacy paths, only when the running vLLM lacks that method: the model's own
``load_weights`` through ``LLM.apply_model`` (0.8+), a callable ``collective_rpc`` (0.7),
or the V0 attribute chain (0.6). They are correct only where no kernel repacks weights
after loading (unquantized layers on CUDA) and never on the CPU build. A multiprocess
engine pickles those callables, which vLLM allows only with
``VLLM_ALLOW_INSECURE_SERIALIZATION=1`` (so does the tied-head refresh):
:func:`insecure_serialization_scope` sets it for the engine's start and for each such call
only, restores it after, and logs it. In-process engines (the default) pickle nothing.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
from collections.abc import Iterator
from typing import Any

import torch

from evomerge.exceptions import GenerationError

logger = logging.getLogger(__name__)

__all__ = [
    "INSECURE_SERIALIZATION_VAR",
    "LEGACY",
    "RELOAD_WEIGHTS",
    "apply_weights",
    "insecure_serialization_scope",
    "refresh_tied_heads",
    "reload_strategy",
    "scoped_env",
]

RELOAD_WEIGHTS = "reload_weights"
LEGACY = "legacy_load_weights"
INSECURE_SERIALIZATION_VAR = "VLLM_ALLOW_INSECURE_SERIALIZATION"


@contextlib.contextmanager
def scoped_env(**values: str) -> Iterator[None]:
    """Set environment variables for the ``with`` block only, then restore each one (unset
    again if it was unset)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def reload_strategy() -> str:
    """:data:`RELOAD_WEIGHTS` when the installed vLLM's model runner has
    ``reload_weights(weights_iterator=...)``, else :data:`LEGACY`."""
    try:
        from vllm.v1.worker.gpu_model_runner import GPUModelRunner
    except ImportError:  # V0-only vLLM
        return LEGACY
    fn = getattr(GPUModelRunner, "reload_weights", None)
    if fn is None:
        return LEGACY
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return LEGACY
    return RELOAD_WEIGHTS if "weights_iterator" in params else LEGACY


@contextlib.contextmanager
def insecure_serialization_scope(needed: bool, *, during: str) -> Iterator[None]:
    """``VLLM_ALLOW_INSECURE_SERIALIZATION=1`` for the block when ``needed`` (a legacy
    weight path on a multiprocess engine), logged with ``during``; a no-op otherwise."""
    if not needed:
        yield
        return
    logger.warning(
        "a function goes to vLLM's engine process (legacy weight path or tied-head refresh), "
        "so %s=1 is set while %s; in_process: true (the default) needs none",
        INSECURE_SERIALIZATION_VAR,
        during,
    )
    with scoped_env(**{INSECURE_SERIALIZATION_VAR: "1"}):
        yield


def refresh_tied_heads(model: Any) -> int:
    """Re-run ``quant_method.process_weights_after_loading`` on every module whose weight
    is the same parameter as an earlier module's (a tied LM head); returns how many."""
    owners: set[int] = set()
    refreshed = 0
    for module in model.modules():
        weight = dict(module.named_parameters(recurse=False)).get("weight")
        if weight is None:
            continue
        if id(weight) not in owners:
            owners.add(id(weight))
            continue
        process = getattr(
            getattr(module, "quant_method", None), "process_weights_after_loading", None
        )
        if callable(process):
            process(module)
            refreshed += 1
    return refreshed


def _load_into_model(weights: list[tuple[str, torch.Tensor]], model: Any) -> int:
    model.load_weights(weights)
    return len(weights)


def _load_into_worker(worker: Any, weights: list[tuple[str, torch.Tensor]]) -> int:
    return _load_into_model(weights, worker.model_runner.model)


def _legacy_model(llm: Any) -> Any:
    obj = llm
    for attr in ("llm_engine", "model_executor", "driver_worker", "model_runner", "model"):
        obj = getattr(obj, attr, None)
        if obj is None:
            return None
    return obj


def _apply_legacy(llm: Any, weights: list[tuple[str, torch.Tensor]]) -> None:
    if callable(getattr(llm, "apply_model", None)):
        llm.apply_model(functools.partial(_load_into_model, weights))
        return
    if callable(getattr(llm, "collective_rpc", None)):
        llm.collective_rpc(_load_into_worker, args=(weights,))
        return
    model = _legacy_model(llm)
    if model is None:
        raise GenerationError(
            "cannot reach the vLLM model to load weights: this vLLM has neither the worker "
            "method reload_weights, LLM.apply_model, LLM.collective_rpc nor "
            "llm_engine.model_executor.driver_worker.model_runner.model; use vllm>=0.6"
        )
    _load_into_model(weights, model)


def apply_weights(
    llm: Any,
    weights: list[tuple[str, torch.Tensor]],
    *,
    strategy: str,
    multiprocess: bool,
    tied: bool = False,
) -> None:
    """Load HF-named ``weights`` into every worker of ``llm`` in place with ``strategy``
    (see :func:`reload_strategy`), refreshing tied heads when ``tied``; the caller resets
    the prefix cache afterwards.

    Raises GenerationError when no path reaches the model; vLLM's own errors propagate.
    """
    if strategy == RELOAD_WEIGHTS:
        llm.collective_rpc(
            "reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True}
        )
        if tied:
            with insecure_serialization_scope(multiprocess, during="the tied head is refreshed"):
                llm.apply_model(refresh_tied_heads)
        return
    with insecure_serialization_scope(multiprocess, during="the weights are sent"):
        _apply_legacy(llm, weights)
