"""LLM judges against vLLM's real OpenAI-compatible server (CPU build, a tiny random
model, ``--api-key`` required): ``evomerge judge`` end to end in a subprocess, both
parsings, structured choice, the key's resolution, and the key never written anywhere."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from evomerge.judge import Sample, build_judge
from evomerge.judge._parse import expected_score

pytestmark = pytest.mark.vllm

LAST_LINE_YAML = """\
system_prompt: Rate the answer from 1 to 7. End with the score on the last line.
user_template: "Q: {question}\\nA: {answer}"
scale: {min: 1, max: 7}
parsing: last_line_integer
max_tokens: 8
"""

LOGPROB_YAML = """\
user_template: "Rate 1-7, one digit.\\nQ: {question}\\nA: {answer}"
scale: {min: 1, max: 7}
parsing: logprob_expectation
structured_choice: true
max_tokens: 1
top_logprobs: 20
"""

ANSWERS = [
    {"question": f"question {i}?", "answer": f"answer number {i}, {'yes ' * i}"} for i in range(10)
]


@pytest.fixture
def judges_dir(tmp_path: Path) -> Path:
    d = tmp_path / "judges"
    d.mkdir()
    (d / "tiny_last_line.yaml").write_text(LAST_LINE_YAML, encoding="utf-8")
    (d / "tiny_logprob.yaml").write_text(LOGPROB_YAML, encoding="utf-8")
    return d


def _cli(
    tmp_path: Path, server: Any, judges_dir: Path, *args: str, key: str | None
) -> subprocess.CompletedProcess[str]:
    """``evomerge judge`` in a subprocess with OPENAI_API_KEY = ``key`` (None: unset); its
    stdout and stderr are written under ``tmp_path`` like a user's logs."""
    inp = tmp_path / "responses.jsonl"
    inp.write_text("".join(json.dumps(a) + "\n" for a in ANSWERS), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "VLLM_API_KEY")}
    if key is not None:
        env["OPENAI_API_KEY"] = key
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "evomerge.cli",
            "judge",
            "--input",
            str(inp),
            "--endpoint",
            server.url,
            "--model",
            server.model_name,
            "--judges-dir",
            str(judges_dir),
            "--json",
            *args,
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    n = len(list(tmp_path.glob("cli_*.stdout")))
    (tmp_path / f"cli_{n}.stdout").write_text(proc.stdout)
    (tmp_path / f"cli_{n}.stderr").write_text(proc.stderr)
    return proc


def _values(proc: subprocess.CompletedProcess[str]) -> list[float]:
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == len(ANSWERS)
    return [math.nan if r["value"] is None else r["value"] for r in rows]


def _files_containing(root: Path, secret: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_judge_cli_with_structured_choice_scores_every_answer_on_the_scale(
    vllm_judge_server: Any, judges_dir: Path, tmp_path: Path
) -> None:
    srv = vllm_judge_server
    structured = _values(
        _cli(
            tmp_path,
            srv,
            judges_dir,
            "--judge",
            "tiny_last_line",
            "--structured-choice",
            key=srv.api_key,
        )
    )
    assert all(v in {1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0} for v in structured), structured
    free = _cli(tmp_path, srv, judges_dir, "--judge", "tiny_last_line", key=srv.api_key)
    # a random model left free rarely ends with a valid score: the constraint is what works
    if free.returncode == 2:  # nothing scored: `evomerge judge` says so and exits non-zero
        assert f"scored none of the {len(ANSWERS)} answer(s)" in free.stderr, free.stderr
    else:
        assert sum(not math.isnan(v) for v in _values(free)) < len(ANSWERS)
    assert _files_containing(tmp_path, srv.api_key) == []


def test_logprob_expectation_reads_real_top_logprobs(
    vllm_judge_server: Any, judges_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = vllm_judge_server
    values = _values(_cli(tmp_path, srv, judges_dir, "--judge", "tiny_logprob", key=srv.api_key))
    assert all(1.0 < v < 7.0 for v in values), values  # expectations, not single tokens
    assert len({round(v, 4) for v in values}) > 3

    # the same request through the openai client: the judge's number is the expectation
    # over the valid score tokens of vLLM's own top_logprobs
    import openai

    monkeypatch.setenv("OPENAI_API_KEY", srv.api_key)
    judge = build_judge(
        "tiny_logprob", judges_dirs=[judges_dir], endpoint=srv.url, model=srv.model_name
    )
    try:
        [score] = judge.score([Sample(**ANSWERS[3])])
    finally:
        judge.close()  # type: ignore[attr-defined]
    client = openai.OpenAI(base_url=srv.url, api_key=srv.api_key)
    reply = client.chat.completions.create(
        model=srv.model_name,
        messages=[
            {
                "role": "user",
                "content": "Rate 1-7, one digit.\nQ: question 3?\nA: " + ANSWERS[3]["answer"],
            }
        ],
        max_tokens=1,
        temperature=0.0,
        logprobs=True,
        top_logprobs=20,
        extra_body={"structured_outputs": {"choice": list("1234567")}},
    )
    positions = [
        {
            "token": t.token,
            "logprob": t.logprob,
            "top_logprobs": [{"token": x.token, "logprob": x.logprob} for x in t.top_logprobs],
        }
        for t in reply.choices[0].logprobs.content  # type: ignore[union-attr]
    ]
    want, err = expected_score(positions, 1, 7)
    # within 1e-3, not bitwise: batches of different sizes move fp32 logits slightly
    assert err is None and score.value == pytest.approx(want, abs=1e-3)
    assert score.value == pytest.approx(values[3], abs=1e-3)


def test_the_server_requires_the_key_and_the_error_says_how_to_send_it(
    vllm_judge_server: Any, judges_dir: Path, tmp_path: Path
) -> None:
    srv = vllm_judge_server
    proc = _cli(tmp_path, srv, judges_dir, "--judge", "tiny_last_line", key=None)
    assert proc.returncode == 2
    assert "HTTP 401" in proc.stderr and "no API key was sent" in proc.stderr
    assert "export OPENAI_API_KEY" in proc.stderr
    wrong = _cli(tmp_path, srv, judges_dir, "--judge", "tiny_last_line", key="sk-wrong-key-0000")
    assert wrong.returncode == 2 and "check the key in $OPENAI_API_KEY" in wrong.stderr
    assert "sk-wrong-key-0000" not in wrong.stderr + wrong.stdout
