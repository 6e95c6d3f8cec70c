"""A small OpenAI-compatible chat-completions server on 127.0.0.1 for tests and benchmarks.

Real HTTP on a random free port, served from a background thread, with scripted
behaviour::

    with FakeOpenAIServer(reply=lambda req: "Reasoning...\\n5", latency=0.05) as srv:
        client = openai.OpenAI(base_url=srv.url, api_key="x")
        ...
        srv.fail_next(429, count=2)     # the next two requests get 429, then normal replies
        srv.hang_next(5.0)              # the next request stalls 5 s (longer than a client timeout)
        assert srv.request_count == 3 and srv.max_in_flight <= 8

Behaviours: ``reply`` (a string or ``callable(request_json) -> str``, called once per
choice, so ``n`` is honoured); ``logprobs`` (``callable(request_json) -> positions``, each
position a list of ``(token, logprob)`` whose first entry is the emitted token) for
requests with ``logprobs: true`` (without it the whole reply is one token of logprob 0);
scripted error statuses (429/500/401/...) and hangs; ``fail_if`` (``callable(request_json)
-> status or None``: an error for the requests it picks, every time); ``latency``, fixed
seconds or a ``(low, high)`` range drawn uniformly per request (``latency_seed``);
``api_key`` (requests without ``Authorization: Bearer <api_key>`` get 401);
``reject_field`` (requests carrying that top-level field get 400 naming it, as OpenAI's API
answers fields it does not know, e.g. ``structured_outputs``); ``echo_authorization``
(replies start with a line repeating the request's Authorization header, as a careless
proxy might). Counters:
``request_count``, ``requests`` (the JSON bodies), ``in_flight``, ``max_in_flight``.
Thread-safe. Sleeps wake up at ``stop()``, so closing never waits on a hang.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeOpenAIServer"]

Positions = list[list[tuple[str, float]]]
_REASONS = {
    400: "bad_request",
    401: "invalid_api_key",
    403: "forbidden",
    404: "not_found",
    429: "rate_limit_exceeded",
    500: "server_error",
    503: "overloaded",
}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # many clients connect at once in the concurrency tests
    fake: FakeOpenAIServer

    def handle_error(
        self, request: Any, client_address: Any
    ) -> None:  # clients that hung up: not our problem
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = (
        True  # else headers and body, sent apart, wait on delayed ACKs (~40 ms)
    )
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._send(
                200,
                {
                    "object": "list",
                    "data": [
                        {"id": self.server.fake.model, "object": "model", "owned_by": "evomerge"}
                    ],
                },
            )
        else:
            self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
            return
        try:
            request = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._send(
                400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}}
            )
            return
        status, body, headers = self.server.fake._handle(
            request, self.headers.get("Authorization", "")
        )
        self._send(status, body, headers)


class FakeOpenAIServer:
    """See the module docstring. Keyword-only; ``start()``/``stop()`` or use as a context manager."""

    def __init__(
        self,
        *,
        reply: str | Callable[[dict[str, Any]], str] = "7",
        logprobs: Callable[[dict[str, Any]], Positions] | None = None,
        errors: Iterable[int] = (),
        latency: float | tuple[float, float] = 0.0,
        latency_seed: int = 0,
        api_key: str | None = None,
        retry_after: float | None = None,
        model: str = "fake-judge",
        fail_if: Callable[[dict[str, Any]], int | None] | None = None,
        echo_authorization: bool = False,
    ) -> None:
        self.echo_authorization = echo_authorization
        self.reply = reply
        self.fail_if = fail_if
        self.logprobs = logprobs
        self.latency = latency
        self._rng = random.Random(latency_seed)
        self.api_key = api_key
        self.reject_field: str | None = None
        self.retry_after = retry_after
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self.request_count = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._script: deque[tuple[str, float]] = deque(("status", float(s)) for s in errors)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- scripting ---------------------------------------------------------------------------
    def fail_next(self, status: int, count: int = 1) -> None:
        """The next ``count`` requests are answered with HTTP ``status`` (an OpenAI-style error body)."""
        with self._lock:
            self._script.extend([("status", float(status))] * count)

    def hang_next(self, seconds: float, count: int = 1) -> None:
        """The next ``count`` requests stall ``seconds`` before being answered normally."""
        with self._lock:
            self._script.extend([("hang", float(seconds))] * count)

    def reset_counters(self) -> None:
        with self._lock:
            self.requests.clear()
            self.request_count = 0
            self.max_in_flight = self.in_flight

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(
                "FakeOpenAIServer is not started; call start() or use it as a context manager"
            )
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The base URL to give an OpenAI client (ends in /v1)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeOpenAIServer:
        if self._server is None:
            self._stop.clear()
            server = _Server(("127.0.0.1", 0), _Handler)
            server.fake = self
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="fake-openai-server",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- request handling (called from the server's threads) -----------------------------------
    def _handle(
        self, request: dict[str, Any], authorization: str
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self._lock:
            self.request_count += 1
            self.requests.append(request)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            action = self._script.popleft() if self._script else None
            base = (
                self._rng.uniform(*self.latency)
                if isinstance(self.latency, tuple)
                else self.latency
            )
        try:
            delay = base + (action[1] if action and action[0] == "hang" else 0.0)
            if delay > 0:
                self._stop.wait(delay)
            if action and action[0] == "status":
                return self._error(int(action[1]))
            status = self.fail_if(request) if self.fail_if is not None else None
            if status is not None:
                return self._error(status)
            if self.api_key is not None and authorization != f"Bearer {self.api_key}":
                sent = authorization.removeprefix("Bearer ")
                return self._error(401, f"Incorrect API key provided: {sent}")  # as real servers do
            if self.reject_field is not None and self.reject_field in request:
                return self._error(
                    400, f"Unrecognized request argument supplied: {self.reject_field}"
                )
            if self.echo_authorization:
                request = {**request, "_echo": f"you sent Authorization: {authorization}\n"}
            return 200, self._completion(request), {}
        finally:
            with self._lock:
                self.in_flight -= 1

    def _error(
        self, status: int, message: str | None = None
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        kind = _REASONS.get(status, "error")
        body = {
            "error": {
                "message": message or f"scripted {status} ({kind})",
                "type": kind,
                "code": kind,
                "param": None,
            }
        }
        headers = (
            {"Retry-After": f"{self.retry_after:g}"}
            if status == 429 and self.retry_after is not None
            else {}
        )
        return status, body, headers

    def _text(self, request: dict[str, Any]) -> str:
        text = self.reply(request) if callable(self.reply) else self.reply
        return str(request.get("_echo", "")) + text

    def _choice(self, index: int, request: dict[str, Any]) -> dict[str, Any]:
        lp = None
        if request.get("logprobs"):
            k = int(request.get("top_logprobs") or 0)
            positions = (
                self.logprobs(request)
                if self.logprobs is not None
                else [[(self._text(request), 0.0)]]
            )
            content = "".join(pos[0][0] for pos in positions)
            lp = {
                "content": [
                    {
                        "token": pos[0][0],
                        "logprob": pos[0][1],
                        "bytes": list(pos[0][0].encode()),
                        "top_logprobs": [
                            {"token": t, "logprob": v, "bytes": list(t.encode())}
                            for t, v in pos[:k]
                        ],
                    }
                    for pos in positions
                ],
                "refusal": None,
            }
        else:
            content = self._text(request)
        return {
            "index": index,
            "message": {"role": "assistant", "content": content, "refusal": None},
            "logprobs": lp,
            "finish_reason": "stop",
        }

    def _completion(self, request: dict[str, Any]) -> dict[str, Any]:
        n = int(request.get("n") or 1)
        return {
            "id": f"chatcmpl-fake-{time.monotonic_ns()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", self.model),
            "choices": [self._choice(i, request) for i in range(n)],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
