"""A 2-node Ray cluster on this machine: trials spread over both nodes, and when the second
node dies mid-search its trial is re-run on the first and the search completes them all."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState

from evomerge.run import open_run
from evomerge.search import run_search

TARGET = 14


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def _wait_started(node: Node, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "Ray runtime started" in Path(node.log.name).read_text(errors="replace"):
            return
        assert node.proc.poll() is None, Path(node.log.name).read_text(errors="replace")
        time.sleep(0.3)
    raise TimeoutError(f"ray start did not finish in {timeout}s: see {node.log.name}")


class Node:
    """One ``ray start --block`` in its own session, so the whole node can be killed at once."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str]) -> None:
        ray_bin = str(Path(sys.executable).with_name("ray"))
        self.log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [ray_bin, "start", "--block", *args],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL the node: ``ray start``, its raylet and every process below it (the
        workers, which Ray starts in sessions of their own)."""
        import psutil

        try:
            tree = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        for proc in [*tree, psutil.Process(self.proc.pid)] if self.proc.poll() is None else tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self.log.close()


@pytest.fixture
def two_nodes(tmp_path: Path, reap: Any) -> Iterator[dict[str, Any]]:
    import ray

    if ray.is_initialized():
        ray.shutdown()
    auth_mode = os.environ.get("RAY_AUTH_MODE")  # the driver turns token auth on when joining
    temp = tempfile.mkdtemp(prefix="evc", dir="/tmp")  # short: Ray's socket paths must fit
    env = {**os.environ, "RAY_TMPDIR": temp, "RAY_AUTH_MODE": "token"}  # ray start's default
    port = _free_port()
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    head = Node(
        [
            "--head",
            f"--port={port}",
            f"--temp-dir={temp}",
            "--include-dashboard=false",
            '--resources={"node_a": 1}',
            *common,
        ],
        tmp_path / "head.log",
        env,
    )
    nodes = [head]
    try:
        _wait_port(port, 180)  # the head's GCS is up: node B can start joining meanwhile
        nodes.append(
            Node(
                [f"--address=127.0.0.1:{port}", '--resources={"node_b": 1}', *common],
                tmp_path / "b.log",
                env,
            )
        )
        _wait_started(head, 180)
        _wait_started(nodes[1], 180)
        yield {"address": f"127.0.0.1:{port}", "head": head, "b": nodes[1]}
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for node in reversed(nodes):
            node.stop()
        reap(temp)
        shutil.rmtree(temp, ignore_errors=True)
        if auth_mode is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = auth_mode


def _node_b_id() -> str | None:
    import ray

    return next(
        (n["NodeID"] for n in ray.nodes() if n["Alive"] and "node_b" in n["Resources"]), None
    )


def test_two_nodes_share_trials_and_survive_losing_one(
    two_nodes: dict[str, Any],
    tiny_models: Any,
    run_yaml: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = run_yaml(
        tmp_path / "run.yaml",
        tiny_models.as_dict(),
        name="cluster",
        options={"sleep_s": 0.4},
        search={"n_trials": TARGET, "population_size": 4, "retries": 1},
        # one CPU per worker, one CPU per node: the two workers land on different nodes;
        # the dead node's worker could not come back (no free CPU), so it is not restarted
        workers={"num": 2, "cpus_per_worker": 1, "max_restarts": 0, "start_timeout_s": 120},
    )
    run_dir = tmp_path / "rd"
    killed: dict[str, Any] = {}

    def kill_node_b_mid_search() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and "at" not in killed:
            time.sleep(0.3)
            try:
                node_b = _node_b_id()
                study = open_run(run_dir).study.study
            except Exception:  # Ray not joined yet, or no study yet
                continue
            done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
            if (
                node_b
                and len(done) >= 4
                and any(t.user_attrs.get("node_id") == node_b for t in done)
            ):
                two_nodes["b"].kill()
                last = max(t.number for t in study.get_trials(deepcopy=False))
                killed.update(at=len(done), node=node_b, last=last)

    killer = threading.Thread(target=kill_node_b_mid_search, daemon=True)
    killer.start()
    summary = run_search(path, run_dir=run_dir, address=two_nodes["address"], progress=False)
    killer.join(timeout=5)

    assert killed, "node B was never seen running a trial"
    assert killed["at"] < TARGET  # it died mid-search
    assert any("is gone for good" in r.getMessage() for r in caplog.records)  # the driver saw it
    study = open_run(run_dir).study.study
    trials = study.get_trials(deepcopy=False)
    nodes = {t.user_attrs.get("node_id") for t in trials if t.state == TrialState.COMPLETE}
    assert killed["node"] in nodes and len(nodes) == 2  # both nodes ran trials
    # every trial accounted for: the one lost with node B was re-run and completed, none
    # failed (a dead worker's trial is retried, not failed) and none is stuck
    assert all(t.state == TrialState.COMPLETE for t in trials), [
        (t.number, t.state.name, t.user_attrs.get("error")) for t in trials
    ]
    lost = [t for t in trials if t.user_attrs.get("attempts", 1) >= 2]
    assert lost, "no trial was re-run after node B died"
    assert all(any("died" in e for e in t.user_attrs["errors"]) for t in lost)
    assert all(t.user_attrs["node_id"] != killed["node"] for t in lost)
    assert summary.stopped == "done" and summary.n_complete == TARGET
    # trials asked after the kill ran on node A only (the lost ones above prove there were
    # some; under load the kill can come late, so no count of later trials is required)
    after = [t for t in trials if t.number > killed["last"]]
    assert all(t.user_attrs["node_id"] != killed["node"] for t in after)
