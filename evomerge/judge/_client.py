"""The chat-completions client of the LLM judges: any OpenAI-compatible endpoint.

Policy (ours, not the ``openai`` library's: its own ``max_retries`` is 0):

- at most ``max_concurrency`` requests in flight (one asyncio.Semaphore per client);
- each attempt abandoned after ``timeout`` seconds;
- 408/409/429/5xx, timeouts and connection errors are retried with exponential backoff
  plus jitter (``Retry-After`` honoured), ``max_attempts`` attempts in all;
- 401/403 raise :class:`JudgeAuthError` at once; 404 (unknown model or path) raises
  :class:`JudgeUnavailableError` at once; other 4xx fail only that request
  (:class:`RequestFailed`); retries spent on the retried reasons raise a *transient*
  :class:`RequestFailed` (the endpoint may be down).

The API key follows the ``openai`` library's convention, for every endpoint (loopback
included): the variable named by ``api_key_env`` when given, else ``OPENAI_API_KEY`` when
set, else no key (a placeholder that keyless servers such as ``vllm serve`` without
``--api-key`` accept). It is read when the client is built, never logged, never put in
messages and never cached: replies and server messages pass :func:`redact` (the key and
any ``Bearer`` token become ``***``) before anyone sees them, so a server that echoes the
Authorization header leaks nothing into the reply cache, the study or the report.

``choices`` asks the server for a structured output restricted to those strings (vLLM's
``structured_outputs: {choice: [...]}``); a server that rejects the field fails fast with
a :class:`JudgeUnavailableError` naming it (every request would fail the same way).

Thread safety: ``acomplete`` runs on the client's private loop (:attr:`loop`); call it
through ``client.loop.run(...)`` from any thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlparse

from evomerge.exceptions import (
    ConfigError,
    JudgeAuthError,
    JudgeUnavailableError,
    RequestFailed,
)
from evomerge.judge._loop import LoopThread

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_KEY_ENV",
    "STRUCTURED_FIELD",
    "ChatClient",
    "api_key_source",
    "redact",
    "resolve_api_key",
]

_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}
_NO_KEY = "EMPTY"  # what vLLM and friends accept when they run without --api-key
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
STRUCTURED_FIELD = "structured_outputs"


_BEARER = re.compile(r"(Bearer\s+)[^\s\"',;\\]+", re.IGNORECASE)  # stops at JSON escapes
_MIN_SECRET = 4  # shorter "keys" (e.g. "x" for a local server) would redact ordinary text


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every ``secret`` and any ``Bearer <token>`` replaced by ``***``."""
    for secret in secrets:
        if secret and len(secret) >= _MIN_SECRET and secret != _NO_KEY:
            text = text.replace(secret, "***")
    return _BEARER.sub(r"\1***", text)


def _is_local(endpoint: str) -> bool:
    return (urlparse(endpoint).hostname or "") in _LOCAL_HOSTS


def api_key_source(api_key_env: str | None) -> str | None:
    """The environment variable the key comes from: ``api_key_env`` when given, else
    ``OPENAI_API_KEY`` when it is set and non-empty, else None (no key)."""
    if api_key_env:
        return api_key_env
    return DEFAULT_KEY_ENV if os.environ.get(DEFAULT_KEY_ENV) else None


def resolve_api_key(endpoint: str, api_key_env: str | None) -> str:
    """The API key for ``endpoint`` (see the module docstring; the same for every endpoint).

    Raises ConfigError naming the variable when ``api_key_env`` is given but unset or empty.
    """
    source = api_key_source(api_key_env)
    if source is None:
        if not _is_local(endpoint):
            logger.warning(
                "sending no API key to %s: neither api_key_env nor %s is set",
                endpoint,
                DEFAULT_KEY_ENV,
            )
        return _NO_KEY
    key = os.environ.get(source, "")
    if not key:
        raise ConfigError(
            f"api_key_env: environment variable {source!r} is not set or empty; "
            f"export {source}=<key for {endpoint}> (or drop api_key_env: then "
            f"{DEFAULT_KEY_ENV} is used when set, and no key otherwise)"
        )
    return key


def _normalize_reply(resp: Any) -> dict[str, Any]:
    """A ChatCompletion as plain JSON: ``{"choices": [{"content", "logprobs"}]}`` (cacheable)."""
    choices = []
    for ch in resp.choices:
        positions = None
        if ch.logprobs is not None and ch.logprobs.content is not None:
            positions = [
                {
                    "token": t.token,
                    "logprob": t.logprob,
                    "top_logprobs": [
                        {"token": x.token, "logprob": x.logprob} for x in (t.top_logprobs or [])
                    ],
                }
                for t in ch.logprobs.content
            ]
        choices.append({"content": ch.message.content or "", "logprobs": positions})
    return {"choices": choices}


class ChatClient:
    """One endpoint + model. Keyword-only; see the module docstring for the retry policy."""

    def __init__(
        self,
        *,
        endpoint: str,
        model: str,
        api_key_env: str | None = None,
        max_concurrency: int = 8,
        timeout: float = 60.0,
        max_attempts: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        if max_concurrency < 1:
            raise ConfigError(f"max_concurrency: must be >= 1 (got {max_concurrency})")
        if max_attempts < 1:
            raise ConfigError(f"max_attempts: must be >= 1 (got {max_attempts})")
        if timeout <= 0:
            raise ConfigError(f"timeout: must be > 0 seconds (got {timeout})")
        self.endpoint = endpoint.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._key = resolve_api_key(self.endpoint, api_key_env)
        self._key_source = api_key_source(api_key_env)
        self.loop = LoopThread()
        self._client: Any = None  # openai.AsyncOpenAI, created on the private loop
        self._sem: asyncio.Semaphore | None = None

    def __repr__(self) -> str:  # never shows the key
        return f"ChatClient(endpoint={self.endpoint!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"

    def _ensure_client(self) -> Any:
        if self._client is None:
            import openai

            self._client = openai.AsyncOpenAI(
                base_url=self.endpoint, api_key=self._key, max_retries=0, timeout=self.timeout + 5.0
            )
            self._sem = asyncio.Semaphore(self.max_concurrency)
        return self._client

    def _key_hint(self) -> str:
        if self._key_source is None:
            return (
                f"no API key was sent (neither api_key_env nor {DEFAULT_KEY_ENV} is set): "
                f"export {DEFAULT_KEY_ENV}=<key>, or name another variable with api_key_env"
            )
        return f"check the key in ${self._key_source}"

    def _redact(self, text: str) -> str:
        return redact(text, [self._key])

    def _redact_reply(self, reply: dict[str, Any]) -> dict[str, Any]:
        for choice in reply["choices"]:
            choice["content"] = self._redact(choice["content"])
            for position in choice["logprobs"] or []:
                position["token"] = self._redact(position["token"])
                for alt in position["top_logprobs"]:
                    alt["token"] = self._redact(alt["token"])
        return reply

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        delay = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        delay *= 0.5 + random.random() / 2  # jitter: half to full delay
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_backoff))
        return delay

    async def acomplete(
        self,
        messages: list[dict[str, str]],
        *,
        n: int = 1,
        temperature: float = 0.0,
        max_tokens: int = 512,
        top_logprobs: int | None = None,
        choices: list[str] | None = None,
    ) -> dict[str, Any]:
        """One chat completion with retries; returns the normalized reply. ``choices``
        restricts the reply to one of these strings (structured outputs).

        Raises JudgeAuthError (401/403), JudgeUnavailableError (404, or a server that
        rejects ``choices``), RequestFailed (anything else that did not succeed within
        ``max_attempts``; ``transient`` when every attempt failed for a retried reason).
        """
        import openai

        client = self._ensure_client()
        assert self._sem is not None
        kwargs: dict[str, Any] = dict(
            model=self.model, messages=messages, n=n, temperature=temperature, max_tokens=max_tokens
        )
        if top_logprobs is not None:
            kwargs.update(logprobs=True, top_logprobs=top_logprobs)
        if choices is not None:
            kwargs["extra_body"] = {STRUCTURED_FIELD: {"choice": list(choices)}}
        reason = ""
        for attempt in range(1, self.max_attempts + 1):
            retry_after: float | None = None
            try:
                async with self._sem:
                    resp = await asyncio.wait_for(
                        client.chat.completions.create(**kwargs), timeout=self.timeout
                    )
                return self._redact_reply(_normalize_reply(resp))
            except (openai.AuthenticationError, openai.PermissionDeniedError) as err:
                raise JudgeAuthError(
                    f"judge endpoint {self.endpoint} refused the credentials (HTTP {err.status_code}) for model "
                    f"{self.model!r}; {self._key_hint()} "
                    f"(server said: {self._redact(str(err.message))[:200]})"
                ) from None
            except openai.NotFoundError as err:
                raise JudgeUnavailableError(
                    f"judge endpoint {self.endpoint} answered 404 for model {self.model!r}: check --endpoint "
                    f"(it should end in /v1) and --model ({self._redact(str(err.message))[:200]})"
                ) from None
            except openai.APIStatusError as err:
                code = err.status_code
                if choices is not None and code in (400, 422) and _mentions_structured(err):
                    raise JudgeUnavailableError(
                        f"judge endpoint {self.endpoint} rejected '{STRUCTURED_FIELD}' (HTTP {code}), "
                        "which 'structured_choice: true' sends; serve the judge with a vLLM that "
                        "has structured outputs (0.32 does) or set structured_choice: false "
                        f"(server said: {self._redact(str(err.message))[:200]})"
                    ) from None
                if code not in (408, 409, 429) and code < 500:
                    raise RequestFailed(
                        f"HTTP {code}: {self._redact(str(err.message))[:300]}"
                    ) from None
                reason = f"HTTP {code}"
                retry_after = _retry_after(err.response.headers.get("retry-after"))
            except (openai.APITimeoutError, asyncio.TimeoutError):
                reason = f"timed out after {self.timeout:g}s"
            except openai.APIConnectionError as err:
                reason = f"connection error ({type(err.__cause__ or err).__name__})"
            except openai.APIError as err:  # e.g. a reply that is not a chat completion
                raise RequestFailed(f"bad reply: {self._redact(str(err))[:300]}") from None
            if attempt < self.max_attempts:
                delay = self._delay(attempt, retry_after)
                logger.warning(
                    "judge request to %s failed (%s); retry %d/%d in %.2fs",
                    self.endpoint,
                    reason,
                    attempt,
                    self.max_attempts - 1,
                    delay,
                )
                await asyncio.sleep(delay)
        raise RequestFailed(
            f"gave up after {self.max_attempts} attempt(s): {reason}", transient=True
        )

    async def _aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def close(self) -> None:
        """Close the HTTP client and stop the private loop (idempotent)."""
        if self.loop.started:
            self.loop.run(self._aclose())
        self.loop.close()


def _mentions_structured(err: Any) -> bool:
    """Whether an error reply names the structured-outputs field (message or ``param``)."""
    body = err.body if isinstance(err.body, dict) else {}
    text = f"{err.message} {body.get('param') or ''}"
    return STRUCTURED_FIELD in text or "structured output" in text.lower()


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
