"""Ray: starting or joining a cluster, and sizing the worker actors."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from evomerge.config import RayConfig, WorkersConfig
from evomerge.exceptions import SearchError
from evomerge.interrupt import as_interrupt, reclaim
from evomerge.search._watchdog import start_watchdog

logger = logging.getLogger(__name__)

__all__ = ["WorkerPlan", "plan_workers", "ray_session"]


@contextmanager
def ray_session(cfg: RayConfig, *, address: str | None = None) -> Iterator[bool]:
    """Ray for the duration of a search. Yields whether this call started it.

    Reuses an already initialized Ray (left running afterwards). Otherwise ``address``
    (or ``cfg.address``) joins an existing cluster; None starts a local one bound to
    127.0.0.1 with no dashboard unless ``include_dashboard``, watched by a
    :mod:`~evomerge.search._watchdog` process that ends what is left of it if this
    process is killed (SIGKILL cannot be caught). Worker logs are not forwarded: only the
    driver prints.
    """
    import ray

    if ray.is_initialized():
        yield False
        return
    addr = address if address is not None else cfg.address
    kwargs: dict[str, Any] = {
        "include_dashboard": cfg.include_dashboard,
        "logging_level": logging.WARNING,
        "log_to_driver": False,
    }
    if addr is None:
        kwargs.update(num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus, _node_ip_address="127.0.0.1")
        logger.info("starting a local Ray cluster on 127.0.0.1")
    else:
        logger.info("joining the Ray cluster at %s", addr)
        _use_token_if_available()
    watchdog = start_watchdog() if addr is None else None  # before: ray.init takes seconds
    try:
        try:
            ray.init(address=addr, **kwargs)
        except SystemExit as err:  # SIGTERM while ray.init's own handler was in place
            ray.shutdown()
            raise as_interrupt(err) from None
        finally:
            reclaim()  # ray.init installed its own SIGTERM handler (sys.exit(15)): ours must win
        try:
            yield True
        finally:
            ray.shutdown()
    finally:
        if watchdog is not None:
            watchdog.stop()


def _use_token_if_available() -> None:
    """Joining a cluster started with token authentication (Ray's default for ``ray start``)
    needs ``RAY_AUTH_MODE=token`` in the driver; when it is unset and this machine holds a
    token (``~/.ray/auth_token``), turn it on as Ray does for local clusters."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # another Ray version: the user sets RAY_AUTH_MODE if needed
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


@dataclass(frozen=True)
class WorkerPlan:
    """How many worker actors, on which device, with which Ray resources each."""

    num: int
    device: str  # "cpu" or "cuda"
    num_cpus: float
    num_gpus: float


def plan_workers(
    cfg: WorkersConfig, *, resources: dict[str, float], num: int | None = None
) -> WorkerPlan:
    """One worker per GPU (``gpus_per_worker`` each) when GPUs are used, else per CPU slot.

    ``resources`` is the cluster's (``ray.cluster_resources()``); ``num`` overrides
    ``cfg.num`` (the ``--workers`` option). Raises SearchError when cuda is asked for on
    a cluster without GPUs.
    """
    gpus, cpus = float(resources.get("GPU", 0.0)), float(resources.get("CPU", 1.0))
    device = cfg.device
    if device == "auto":
        device = "cuda" if gpus >= cfg.gpus_per_worker else "cpu"
    want = num if num is not None else (None if cfg.num == "auto" else int(cfg.num))
    if want is not None and want < 1:
        raise SearchError(f"--workers must be >= 1, got {want}")
    if device == "cuda":
        if gpus < cfg.gpus_per_worker:
            raise SearchError(
                f"workers.device is cuda but the cluster has {gpus:g} GPU(s) for gpus_per_worker={cfg.gpus_per_worker:g}; "
                "use workers.device: cpu or join a cluster with GPUs (--address)"
            )
        n = want if want is not None else max(1, int(gpus // cfg.gpus_per_worker))
        return WorkerPlan(
            num=n,
            device="cuda",
            num_cpus=min(cfg.cpus_per_worker, cpus),
            num_gpus=cfg.gpus_per_worker,
        )
    n = want if want is not None else max(1, int(cpus // cfg.cpus_per_worker))
    return WorkerPlan(num=n, device="cpu", num_cpus=cfg.cpus_per_worker, num_gpus=0.0)
