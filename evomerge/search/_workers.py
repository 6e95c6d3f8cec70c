"""WorkerGroup: the driver's worker actors, started, watched and restarted.

Each slot holds at most one actor running at most ``per_worker`` trials (1, or 2 with
``search.overlap_judging``: one generating, one judging). A slot whose actor dies
(process crash, node death, start timeout) gets a new actor, at most ``max_restarts``
times; then it is dead. Used only from the driver's thread.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evomerge.exceptions import SearchError
from evomerge.search._cluster import WorkerPlan
from evomerge.search._worker import Worker

logger = logging.getLogger(__name__)

__all__ = ["Slot", "WorkerGroup", "ray_cause"]

_CAUSE_CHARS = 4000
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def ray_cause(err: BaseException) -> str:
    """What went wrong, from a Ray error: the remote exception with its whole message (a
    config error listing every bad line keeps every line), without Ray's traceback and
    colour codes; else Ray's own message. At most a few thousand characters."""
    lines = _ANSI.sub("", str(err)).strip().splitlines()
    frames = [i for i, line in enumerate(lines) if line.startswith('  File "')]
    if frames:  # a remote traceback: keep what follows its last frame (the exception)
        i = frames[-1] + 1
        while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
            i += 1  # the frame's source line and its ^^^ markers
        text = "\n".join(lines[i:]).strip()
    else:
        text = "\n".join(line for line in lines if line.strip())
    text = text or type(err).__name__
    if not frames:
        text = f"{type(err).__name__}: {text}"
    return text if len(text) <= _CAUSE_CHARS else text[: _CAUSE_CHARS - 3] + "..."


@dataclass
class Slot:
    """One worker position. ``starting`` is the pending ``describe`` call of a new actor."""

    index: int
    actor: Any = None
    starting: Any = None
    start_deadline: float = 0.0
    ready: bool = False
    dead: bool = False
    restarts: int = 0
    info: dict[str, Any] | None = None
    last_error: str | None = None


class WorkerGroup:
    """Starts ``plan.num`` actors of :class:`Worker` and keeps them alive (bounded).
    ``per_worker``: the evaluations an actor runs at once (its ``max_concurrency``)."""

    def __init__(
        self,
        *,
        config_data: dict[str, Any],
        run_dir: Path,
        plan: WorkerPlan,
        max_restarts: int,
        start_timeout_s: float,
        per_worker: int = 1,
    ) -> None:
        import ray

        self.ray = ray
        self._config_data = config_data
        self._run_dir = str(run_dir)
        self.plan = plan
        self.max_restarts = max_restarts
        self.start_timeout_s = start_timeout_s
        self.per_worker = per_worker
        self._cls = ray.remote(Worker).options(
            num_cpus=plan.num_cpus,
            num_gpus=plan.num_gpus,
            max_restarts=0,
            max_concurrency=per_worker,  # > 1: a threaded actor, see Worker
        )
        self.slots = [Slot(index=i) for i in range(plan.num)]

    # -- lifecycle ------------------------------------------------------------------------

    def _spawn(self, slot: Slot) -> None:
        slot.actor = self._cls.remote(
            self._config_data, self._run_dir, slot.index, self.plan.device
        )
        slot.starting = slot.actor.describe.remote()
        slot.start_deadline = time.monotonic() + self.start_timeout_s
        slot.ready = False

    def kill(self, slot: Slot) -> None:
        if slot.actor is not None:
            try:
                self.ray.kill(slot.actor, no_restart=True)
            except Exception as err:  # already gone
                logger.debug("kill worker %d: %s", slot.index, err)
        slot.actor, slot.starting, slot.ready = None, None, False

    def replace(self, slot: Slot, reason: str) -> bool:
        """Kill ``slot``'s actor and start a new one if restarts remain; else mark it dead."""
        self.kill(slot)
        slot.last_error = reason
        if slot.restarts >= self.max_restarts:
            slot.dead = True
            logger.error(
                "worker %d is gone for good after %d restart(s): %s",
                slot.index,
                slot.restarts,
                reason,
            )
            return False
        slot.restarts += 1
        logger.warning(
            "restarting worker %d (restart %d/%d): %s",
            slot.index,
            slot.restarts,
            self.max_restarts,
            reason,
        )
        self._spawn(slot)
        return True

    def start(self) -> dict[str, Any]:
        """Start every actor; wait until one is ready and return its ``describe()``.

        Raises SearchError when no actor comes up (the message holds the first cause,
        e.g. a configuration error raised while building the evaluator).
        """
        for slot in self.slots:
            self._spawn(slot)
        while True:
            refs = self.starting_refs()
            if not refs:
                causes = "\n".join(sorted({s.last_error or "?" for s in self.slots}))
                raise SearchError(f"no worker could start: {causes}")
            ready, _ = self.ray.wait(refs, num_returns=1, timeout=1.0)
            for ref in ready:
                self.on_started(ref)
            self.check_start_deadlines()
            first = next((s for s in self.slots if s.ready), None)
            if first is not None and first.info is not None:
                return first.info

    def shutdown(self) -> None:
        for slot in self.slots:
            self.kill(slot)

    # -- events -----------------------------------------------------------------------------

    def starting_refs(self) -> list[Any]:
        return [s.starting for s in self.slots if s.starting is not None]

    def slot_of_start(self, ref: Any) -> Slot | None:
        return next((s for s in self.slots if s.starting is not None and s.starting == ref), None)

    def on_started(self, ref: Any) -> None:
        """A ``describe`` call finished: the actor is ready, or it failed to start."""
        slot = self.slot_of_start(ref)
        if slot is None:
            return
        slot.starting = None
        try:
            slot.info = self.ray.get(ref)
            slot.ready = True
            logger.info(
                "worker %d ready on node %s (%s)",
                slot.index,
                slot.info.get("node_id", "?")[:12],
                slot.info.get("device"),
            )
        except self.ray.exceptions.RayError as err:
            reason = f"worker {slot.index} failed to start: {ray_cause(err)}"
            if getattr(err, "actor_init_failed", False):
                # building the evaluator raised (bad config, missing files): a new actor
                # would raise the same, so this slot is not restarted
                self.kill(slot)
                slot.dead, slot.last_error = True, reason
                logger.error("%s", reason)
            else:  # the process or its node died while starting
                self.replace(slot, reason)

    def check_start_deadlines(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.starting is not None and now > slot.start_deadline:
                self.replace(
                    slot, f"worker {slot.index} did not start within {self.start_timeout_s:g}s"
                )

    @property
    def ready_slots(self) -> list[Slot]:
        return [s for s in self.slots if s.ready and not s.dead]

    @property
    def all_dead(self) -> bool:
        return all(s.dead for s in self.slots)
