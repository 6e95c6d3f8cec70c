"""LLMJudge: a judge YAML + a chat client + an optional reply cache."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evomerge.exceptions import JudgeUnavailableError, RequestFailed
from evomerge.judge._cache import JudgeCache, request_key
from evomerge.judge._client import ChatClient
from evomerge.judge._parse import expected_score, parse_last_line_integer
from evomerge.judge._spec import LLMJudgeDefinition, render_messages
from evomerge.judge._types import Sample, Score, nan_score

logger = logging.getLogger(__name__)

__all__ = ["LLMJudge"]

_SEPARATOR = "\n\n-----\n\n"  # between the raw replies of one answer's n samples


@dataclass
class _Tally:
    """The requests of one ``score`` call: replies fetched, failures, transient failures."""

    fetched: int = 0
    failed: int = 0
    transient: int = 0
    reason: str = ""


class LLMJudge:
    """Scores answers by asking a judge model, as its YAML definition says.

    Each answer is one chat request with ``n = definition.samples``; the n parsed scores are
    averaged (NaN ones dropped). Requests for different answers run concurrently up to the
    client's bound; identical requests (same messages and sampling) are sent once and, with a
    cache, never again.

    ``score`` is thread-safe and may be called from inside a running event loop (the work
    runs on the client's private loop). Raises JudgeAuthError on 401/403,
    JudgeUnavailableError on 404 and when no request of the call got a reply because the
    endpoint is down (connection errors, timeouts or 5xx after every retry); any other
    failure only makes that answer's Score NaN with the error.
    """

    needs_generator = False

    def __init__(
        self,
        *,
        name: str,
        definition: LLMJudgeDefinition,
        client: ChatClient,
        cache: JudgeCache | None = None,
        owns_client: bool = False,
        progress: bool = False,
    ) -> None:
        self.name = name
        self.definition = definition
        self.client = client
        self.cache = cache
        self.progress = progress
        self._owns_client = owns_client

    def __repr__(self) -> str:
        return f"LLMJudge(name={self.name!r}, client={self.client!r})"

    @property
    def _params(self) -> dict[str, Any]:
        d = self.definition
        top = d.top_logprobs if d.parsing == "logprob_expectation" else None
        params: dict[str, Any] = {
            "n": d.samples,
            "temperature": d.temperature,
            "max_tokens": d.max_tokens,
            "top_logprobs": top,
        }
        if d.structured_choice:  # only then, so that earlier cache keys stay valid
            params["choices"] = d.score_choices()
        return params

    def score(self, samples: Sequence[Sample]) -> list[Score]:
        """One Score per sample, in order (blocks until all are in)."""
        return self.client.loop.run(self._ascore(list(samples)))

    async def ascore(self, samples: Sequence[Sample]) -> list[Score]:
        """``score`` for async callers, from any event loop."""
        return await self.client.loop.submit(self._ascore(list(samples)))

    async def _ascore(self, samples: list[Sample]) -> list[Score]:
        inflight: dict[str, asyncio.Task[dict[str, Any]]] = {}
        tally = _Tally()
        bar = None
        if self.progress and samples:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(samples), desc=f"judge {self.name}", unit="answer", leave=False)

        async def one(sample: Sample) -> Score:
            try:
                return await self._score_one(sample, inflight, tally)
            finally:
                if bar is not None:
                    bar.update(1)

        tasks = [asyncio.ensure_future(one(s)) for s in samples]
        try:
            scores = list(await asyncio.gather(*tasks))
        except BaseException:
            for t in [*tasks, *inflight.values()]:
                t.cancel()
            await asyncio.gather(*tasks, *inflight.values(), return_exceptions=True)
            raise
        finally:
            if bar is not None:
                bar.close()
        if tally.transient and not tally.fetched and tally.transient == tally.failed:
            raise JudgeUnavailableError(
                f"judge {self.name!r}: the endpoint {self.client.endpoint} (model {self.client.model!r}) "
                f"answered none of {tally.failed} request(s): {tally.reason}; check that it is up "
                "(and the timeout/max_attempts settings)"
            )
        return scores

    async def _score_one(
        self, sample: Sample, inflight: dict[str, asyncio.Task[dict[str, Any]]], tally: _Tally
    ) -> Score:
        messages = render_messages(self.definition, sample)
        params = self._params
        key = request_key(
            endpoint=self.client.endpoint, model=self.client.model, messages=messages, params=params
        )
        reply = self.cache.get(key) if self.cache is not None else None
        if reply is None:
            task = inflight.get(key)
            if task is None:
                task = asyncio.ensure_future(self._fetch(key, messages, params, tally))
                inflight[key] = task
            try:
                reply = await asyncio.shield(task)
            except RequestFailed as err:
                return nan_score(f"judge request failed: {err}")
        return self._parse(reply)

    async def _fetch(
        self, key: str, messages: list[dict[str, str]], params: dict[str, Any], tally: _Tally
    ) -> dict[str, Any]:
        try:
            reply = await self.client.acomplete(messages, **params)
        except RequestFailed as err:
            tally.failed += 1
            if err.transient:
                tally.transient += 1
                tally.reason = str(err)
            raise
        tally.fetched += 1
        if self.cache is not None:
            self.cache.put(key, reply)
        return reply

    def _parse(self, reply: dict[str, Any]) -> Score:
        d = self.definition
        lo, hi = d.scale.min, d.scale.max
        choices = reply.get("choices") or []
        if not choices:
            return nan_score("the endpoint returned no choices")
        values: list[float] = []
        errors: list[str] = []
        for ch in choices:
            if d.parsing == "last_line_integer":
                v, e = parse_last_line_integer(ch.get("content", ""), lo, hi)
            else:
                v, e = expected_score(ch.get("logprobs") or [], lo, hi)
            values.append(v)
            if e is not None:
                errors.append(e)
        raw = _SEPARATOR.join(ch.get("content", "") for ch in choices)
        good = [v for v in values if not math.isnan(v)]
        if not good:
            return Score(value=math.nan, raw=raw, error="; ".join(dict.fromkeys(errors)))
        error = (
            None
            if not errors
            else f"{len(errors)}/{len(values)} judge samples dropped: {errors[0]}"
        )
        return Score(value=sum(good) / len(good), raw=raw, error=error)

    def close(self) -> None:
        """Close the client if this judge owns it (idempotent)."""
        if self._owns_client:
            self.client.close()
