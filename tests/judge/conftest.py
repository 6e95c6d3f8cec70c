"""Fixtures for judge tests: a real OpenAI-compatible HTTP server and small judge YAMLs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from evomerge.judge import ChatClient, Judge, JudgeCache, build_judge
from evomerge.testing.openai_server import FakeOpenAIServer

SIMPLE_YAML = """\
description: test judge, 1..7 on the last line
system_prompt: You are a test judge.
user_template: |
  Question: {question}
  Answer: {answer}
scale: {min: 1, max: 7}
parsing: last_line_integer
max_tokens: 64
"""

LOGPROB_YAML = """\
user_template: "Rate 1-7, one digit only.\\nQ: {question}\\nA: {answer}"
scale: {min: 1, max: 7}
parsing: logprob_expectation
max_tokens: 1
top_logprobs: 5
"""


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(reply="Looks fine.\n5") as srv:
        yield srv


@pytest.fixture
def judges_dir(tmp_path: Path) -> Path:
    d = tmp_path / "judges"
    d.mkdir()
    (d / "simple.yaml").write_text(SIMPLE_YAML, encoding="utf-8")
    (d / "lp.yaml").write_text(LOGPROB_YAML, encoding="utf-8")
    return d


@pytest.fixture
def make_judge(server: FakeOpenAIServer, judges_dir: Path) -> Iterator[Callable[..., Judge]]:
    """``make_judge(type_name="simple", cache=None, options=None, **client_settings)``; the
    client talks to ``server`` as model ``judge-m`` unless ``endpoint``/``model`` are given."""
    clients: list[ChatClient] = []

    def make(
        type_name: str = "simple",
        *,
        cache: JudgeCache | None = None,
        options: dict[str, Any] | None = None,
        **client_kw: Any,
    ) -> Judge:
        kw: dict[str, Any] = {
            "endpoint": server.url,
            "model": "judge-m",
            "max_concurrency": 4,
            "timeout": 5.0,
            "max_attempts": 3,
            "backoff": 0.01,
        }
        kw.update(client_kw)
        client = ChatClient(**kw)
        clients.append(client)
        return build_judge(
            type_name, judges_dirs=[judges_dir], client=client, cache=cache, options=options
        )

    yield make
    for c in clients:
        c.close()
