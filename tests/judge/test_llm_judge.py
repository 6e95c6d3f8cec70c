"""The LLM judge against a real HTTP chat-completions server, through the openai client."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from evomerge.exceptions import (
    ConfigError,
    JudgeAuthError,
    JudgeError,
    JudgeUnavailableError,
    is_infrastructure,
)
from evomerge.judge import ChatClient, JudgeCache, Sample, build_judge
from evomerge.judge._client import api_key_source, resolve_api_key
from evomerge.testing.openai_server import FakeOpenAIServer


def samples(n: int, prefix: str = "answer") -> list[Sample]:
    return [Sample(question=f"question {i}", answer=f"{prefix} {i}") for i in range(n)]


def answer_of(request: dict[str, Any]) -> str:
    """The answer line of the 'simple' judge prompt."""
    user = request["messages"][-1]["content"]
    return next(line for line in user.splitlines() if line.startswith("Answer: "))[
        len("Answer: ") :
    ]


def test_well_formed_replies_are_parsed(server, make_judge):
    server.reply = lambda req: (
        f"Reasoning about it.\nScore: {int(answer_of(req).split()[-1]) % 7 + 1}"
    )
    judge = make_judge()
    scores = judge.score(samples(10))
    assert [s.value for s in scores] == [float(i % 7 + 1) for i in range(10)]
    assert all(s.error is None and s.raw.startswith("Reasoning") for s in scores)
    req = server.requests[0]
    assert req["model"] == "judge-m" and req["max_tokens"] == 64 and req["temperature"] == 0.0
    assert req["messages"][0] == {"role": "system", "content": "You are a test judge."}
    assert "Question: question" in req["messages"][1]["content"]


def test_garbage_gives_nan_with_raw_text(server, make_judge):
    server.reply = "I refuse to give a number."
    [s] = make_judge().score(samples(1))
    assert math.isnan(s.value) and not s.ok
    assert s.raw == "I refuse to give a number."
    assert "no score on the last line" in (s.error or "")


def test_out_of_range_is_nan(server, make_judge):
    server.reply = "Brilliant.\n9"
    [s] = make_judge().score(samples(1))
    assert math.isnan(s.value) and "outside the scale 1..7" in (s.error or "")


def test_429_then_success_is_retried(server, make_judge):
    server.fail_next(429)
    [s] = make_judge().score(samples(1))
    assert s.value == 5.0 and server.request_count == 2


def test_retry_after_is_honoured(server, make_judge):
    server.retry_after = 0.3
    server.fail_next(429)
    t0 = time.monotonic()
    [s] = make_judge(backoff=0.001).score(samples(1))
    assert s.value == 5.0 and time.monotonic() - t0 >= 0.3


def test_500_is_retried_and_gives_up_after_max_attempts(server, make_judge):
    server.fail_next(500)
    [s] = make_judge().score(samples(1))
    assert s.value == 5.0 and server.request_count == 2
    server.reset_counters()
    server.fail_if = lambda req: 503 if answer_of(req) == "other 0" else None
    s0, s1 = make_judge(max_attempts=3).score(samples(2, prefix="other"))
    assert math.isnan(s0.value) and "gave up after 3 attempt(s): HTTP 503" in (s0.error or "")
    assert s1.value == 5.0  # the endpoint answers: one answer's failure stays that answer's
    assert server.request_count == 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("fault", ["refused", "500", "hang"])
def test_an_endpoint_that_answers_nothing_raises_unavailable(
    fault: str, server, judges_dir: Path, make_judge
):
    """Connection refused, persistent 5xx or timeouts on every request: the endpoint is down,
    an infrastructure failure (the search stops on it), not a NaN score per answer."""
    if fault == "refused":
        client = ChatClient(
            endpoint=f"http://127.0.0.1:{free_port()}/v1", model="m", max_attempts=2, backoff=0.01
        )
        judge = build_judge("simple", judges_dirs=[judges_dir], client=client)
    elif fault == "500":
        server.fail_if = lambda req: 500
        judge = make_judge(max_attempts=2)
    else:
        server.hang_next(30.0, count=10)
        judge = make_judge(timeout=0.3, max_attempts=2)
    with pytest.raises(JudgeUnavailableError) as info:
        judge.score(samples(3))
    assert is_infrastructure(info.value)
    reason = {"refused": "connection error", "500": "HTTP 500", "hang": "timed out after 0.3s"}
    assert "answered none of 3 request(s)" in str(info.value) and reason[fault] in str(info.value)
    if fault == "refused":
        client.close()


def test_400_is_not_retried(server, make_judge):
    server.fail_next(400)
    [s] = make_judge().score(samples(1))
    assert math.isnan(s.value) and "HTTP 400" in (s.error or "") and server.request_count == 1


def test_404_raises(server, make_judge):
    server.fail_next(404)
    with pytest.raises(JudgeUnavailableError, match="404") as info:
        make_judge().score(samples(1))
    assert isinstance(info.value, JudgeError) and is_infrastructure(info.value)


def test_401_fails_fast_with_a_clear_message(server, make_judge, monkeypatch, caplog):
    monkeypatch.setenv("EVOMERGE_TEST_JUDGE_KEY", "sk-wrong-key-123456")
    server.api_key = "sk-right-key"
    judge = make_judge(api_key_env="EVOMERGE_TEST_JUDGE_KEY", max_attempts=4)
    with caplog.at_level(logging.DEBUG), pytest.raises(JudgeAuthError) as info:
        judge.score(samples(1))
    msg = str(info.value)
    assert is_infrastructure(info.value)  # the search stops on it
    assert "HTTP 401" in msg and "EVOMERGE_TEST_JUDGE_KEY" in msg and server.url in msg
    assert "sk-wrong-key-123456" not in msg  # the server echoed it; we redact it
    assert "sk-wrong-key-123456" not in caplog.text
    assert server.request_count == 1


def test_auth_error_stops_a_batch(server, make_judge):
    server.fail_next(403)
    server.latency = 0.05
    with pytest.raises(JudgeAuthError, match="403"):
        make_judge(max_concurrency=2).score(samples(20))
    assert server.request_count < 20


def test_timeout_is_bounded(server, make_judge):
    server.hang_next(30.0, count=10)
    judge = make_judge(timeout=0.3, max_attempts=2)
    t0 = time.monotonic()
    with pytest.raises(JudgeUnavailableError, match=r"timed out after 0\.3s"):
        judge.score(samples(1))
    elapsed = time.monotonic() - t0
    assert server.request_count == 2
    assert (
        0.55 < elapsed < 3.0
    )  # ~ timeout x attempts (0.6 s) plus a tiny backoff; the hang is 30 s


def test_a_hang_then_success(server, make_judge):
    server.hang_next(30.0)
    [s] = make_judge(timeout=0.3, max_attempts=2).score(samples(1))
    assert s.value == 5.0 and server.request_count == 2


def test_logprob_mode_computes_the_expected_score(server, make_judge):
    lp = {"5": 0.5, "6": 0.3, "x": 0.15, "9": 0.05}  # "x" and out-of-range "9" are not scores
    server.logprobs = lambda req: [[(t, math.log(p)) for t, p in lp.items()]]
    [s] = make_judge("lp").score(samples(1))
    assert s.value == pytest.approx((5 * 0.5 + 6 * 0.3) / 0.8)
    req = server.requests[0]
    assert req["logprobs"] is True and req["top_logprobs"] == 5 and req["max_tokens"] == 1


def test_logprob_mode_nan_when_no_valid_token(server, make_judge):
    server.logprobs = lambda req: [[("Sure", -0.1), ("The", -2.0)]]
    [s] = make_judge("lp").score(samples(1))
    assert math.isnan(s.value) and "no valid score token" in (s.error or "") and s.raw == "Sure"


def test_n_samples_are_averaged_dropping_nan(server, make_judge):
    replies = itertools.cycle(["ok\n5", "no idea", "ok\n7"])
    lock = threading.Lock()

    def reply(req: dict[str, Any]) -> str:
        with lock:
            return next(replies)

    server.reply = reply
    [s] = make_judge(options={"samples": 3, "temperature": 0.7}).score(samples(1))
    assert server.requests[0]["n"] == 3 and server.requests[0]["temperature"] == 0.7
    assert s.value == 6.0 and "1/3 judge samples dropped" in (s.error or "")
    assert s.raw.count("-----") == 2


def test_cache_prevents_a_second_request(server, make_judge, tmp_path: Path):
    path = tmp_path / "run" / "judge_cache.sqlite"
    cache = JudgeCache(path)
    first = make_judge(cache=cache).score(samples(5))
    assert server.request_count == 5
    again = make_judge(cache=cache).score(samples(5))
    assert server.request_count == 5 and again == first
    cache.close()
    # a new process would open a new cache on the same file
    cache2 = JudgeCache(path)
    resumed = make_judge(cache=cache2).score(samples(6))
    assert server.request_count == 6 and resumed[:5] == first and cache2.hits == 5
    # different sampling parameters are a different request
    make_judge(cache=cache2, options={"temperature": 0.5}).score(samples(1))
    assert server.request_count == 7
    cache2.close()


def test_cache_is_keyed_by_endpoint_and_model(server, make_judge, tmp_path: Path):
    """A resumed run with another judge model (or endpoint) must not reuse the old scores."""
    server.reply = lambda request: "ok\n2" if request["model"] == "judge-big" else "ok\n5"
    cache = JudgeCache(tmp_path / "judge_cache.sqlite")
    small = make_judge(cache=cache).score(samples(3))
    big = make_judge(cache=cache, model="judge-big").score(samples(3))
    assert [s.value for s in small] == [5.0] * 3 and [s.value for s in big] == [2.0] * 3
    assert server.request_count == 6 and cache.hits == 0
    with FakeOpenAIServer(reply="ok\n3") as other:  # the same model name elsewhere
        elsewhere = make_judge(cache=cache, endpoint=other.url).score(samples(3))
        assert [s.value for s in elsewhere] == [3.0] * 3 and other.request_count == 3
    again = make_judge(cache=cache, model="judge-big").score(samples(3))
    assert again == big and cache.hits == 3 and server.request_count == 6  # and it is cached
    cache.close()


def test_failures_are_not_cached(server, make_judge, tmp_path: Path):
    cache = JudgeCache(tmp_path / "c.sqlite")
    server.fail_next(400)
    [bad] = make_judge(cache=cache).score(samples(1))
    [good] = make_judge(cache=cache).score(samples(1))
    assert not bad.ok and good.value == 5.0 and server.request_count == 2
    cache.close()


def test_identical_answers_in_one_batch_are_sent_once(server, make_judge):
    same = [Sample(question="q", answer="a")] * 6
    scores = make_judge().score(same)
    assert [s.value for s in scores] == [5.0] * 6 and server.request_count == 1


def test_concurrency_bound_is_respected(server, make_judge):
    server.latency = 0.1
    scores = make_judge(max_concurrency=3).score(samples(15))
    assert all(s.value == 5.0 for s in scores)
    assert server.max_in_flight == 3  # bounded, and the bound is actually used


def test_results_keep_input_order_when_replies_finish_out_of_order(server, make_judge):
    def slow_reply(req: dict[str, Any]) -> str:
        i = int(answer_of(req).split()[-1])
        time.sleep(0.02 * (8 - i))  # the first answers finish last
        return f"score\n{i % 7 + 1}"

    server.reply = slow_reply
    scores = make_judge(max_concurrency=8).score(samples(8))
    assert [s.value for s in scores] == [float(i % 7 + 1) for i in range(8)]


def test_api_key_never_logged_nor_cached(
    server, judges_dir: Path, tmp_path: Path, monkeypatch, caplog
):
    secret = "sk-test-SECRET-0123456789"
    monkeypatch.setenv("EVOMERGE_TEST_JUDGE_KEY", secret)
    server.api_key = secret
    server.fail_next(429)
    cache = JudgeCache(tmp_path / "judge_cache.sqlite")
    with caplog.at_level(logging.DEBUG):
        judge = build_judge(
            "simple",
            judges_dirs=[judges_dir],
            endpoint=server.url,
            model="judge-m",
            api_key_env="EVOMERGE_TEST_JUDGE_KEY",
            cache=cache,
            client_options={"backoff": 0.01},
        )
        scores = judge.score(samples(3))
        logging.getLogger("test").info("judge: %r client: %r", judge, judge.client)  # type: ignore[attr-defined]
        judge.close()  # type: ignore[attr-defined]
    cache.close()
    assert [s.value for s in scores] == [5.0] * 3  # the key was sent and accepted
    assert "retry 1/" in caplog.text  # something was logged
    assert secret not in caplog.text
    blob = b"".join(p.read_bytes() for p in tmp_path.glob("judge_cache.sqlite*"))
    assert len(blob) > 0 and secret.encode() not in blob


def test_missing_key_variable_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("EVOMERGE_NO_SUCH_KEY", raising=False)
    with pytest.raises(ConfigError, match="EVOMERGE_NO_SUCH_KEY"):
        ChatClient(
            endpoint="https://api.example.com/v1", model="m", api_key_env="EVOMERGE_NO_SUCH_KEY"
        )


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:8000/v1", "https://api.example.com/v1"])
def test_key_resolution_follows_the_openai_convention(monkeypatch, endpoint):
    """OPENAI_API_KEY when set, for any endpoint (loopback too); api_key_env names another
    variable; no key only when neither is set."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-openai-var")
    monkeypatch.setenv("EVOMERGE_TEST_OTHER_KEY", "sk-from-other-var")
    assert resolve_api_key(endpoint, None) == "sk-from-openai-var"
    assert api_key_source(None) == "OPENAI_API_KEY"
    assert resolve_api_key(endpoint, "EVOMERGE_TEST_OTHER_KEY") == "sk-from-other-var"
    monkeypatch.delenv("OPENAI_API_KEY")
    assert resolve_api_key(endpoint, None) == "EMPTY" and api_key_source(None) is None


def test_the_key_from_openai_api_key_reaches_a_loopback_server(server, make_judge, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-loopback-key")
    server.api_key = "sk-loopback-key"
    [s] = make_judge().score(samples(1))
    assert s.value == 5.0


def test_401_without_any_key_says_how_to_send_one(server, make_judge, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server.api_key = "sk-required"
    with pytest.raises(JudgeAuthError, match=r"no API key was sent.*export OPENAI_API_KEY"):
        make_judge().score(samples(1))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    with pytest.raises(JudgeAuthError, match=r"check the key in \$OPENAI_API_KEY"):
        make_judge().score(samples(1))


def test_structured_choice_sends_the_scale_and_keys_the_cache(server, make_judge, tmp_path: Path):
    cache = JudgeCache(tmp_path / "c.sqlite")
    plain = make_judge(cache=cache).score(samples(1))
    structured = make_judge(cache=cache, options={"structured_choice": True}).score(samples(1))
    cache.close()
    assert plain[0].value == structured[0].value == 5.0
    assert "structured_outputs" not in server.requests[0]  # off by default
    assert server.requests[1]["structured_outputs"] == {"choice": list("1234567")}
    assert server.request_count == 2  # a different request: not served from the cache


def test_a_server_rejecting_structured_outputs_fails_fast_naming_the_field(server, make_judge):
    server.reject_field = "structured_outputs"
    with pytest.raises(
        JudgeError, match=r"rejected 'structured_outputs'.*structured_choice: false"
    ):
        make_judge(options={"structured_choice": True}).score(samples(3))
    [s] = make_judge().score(samples(1, prefix="plain"))  # without it: answered
    assert s.value == 5.0


def test_score_works_inside_a_running_event_loop(server, make_judge):
    judge = make_judge()

    async def main() -> tuple[list[Any], list[Any]]:
        sync = judge.score(samples(2))  # a sync call from a coroutine
        asynchronous = await judge.ascore(samples(2, prefix="other"))
        return sync, asynchronous

    sync, asynchronous = asyncio.run(main())
    assert [s.value for s in sync + asynchronous] == [5.0] * 4


def test_score_is_thread_safe(server, make_judge):
    judge = make_judge(max_concurrency=4)
    results: dict[int, list[float]] = {}

    def work(k: int) -> None:
        results[k] = [s.value for s in judge.score(samples(5, prefix=f"t{k}"))]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {k: [5.0] * 5 for k in range(4)} and server.request_count == 20
    assert server.max_in_flight <= 4


def test_llm_judge_without_endpoint_is_a_config_error(judges_dir: Path):
    with pytest.raises(ConfigError, match="needs an endpoint and a model"):
        build_judge("simple", judges_dirs=[judges_dir])


def test_fake_server_counts_and_closes_promptly():
    srv = FakeOpenAIServer(latency=0.0).start()
    srv.hang_next(60.0)
    import openai

    client = openai.OpenAI(base_url=srv.url, api_key="x", max_retries=0, timeout=0.2)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    t0 = time.monotonic()
    srv.stop()
    assert time.monotonic() - t0 < 2.0 and srv.request_count == 1
    client.close()


def test_a_server_echoing_the_key_gets_nothing_cached_or_passed_on(
    judges_dir: Path, tmp_path: Path, monkeypatch
):
    """A 200 reply that repeats the Authorization header: the key and the Bearer token
    reach neither the cache file nor the Score (what the study and report keep)."""
    secret = "sk-live-SECRET-abcdef0123456789"
    monkeypatch.setenv("EVOMERGE_TEST_JUDGE_KEY", secret)
    cache = JudgeCache(tmp_path / "judge_cache.sqlite")
    with FakeOpenAIServer(reply="fine\n6", api_key=secret, echo_authorization=True) as srv:
        judge = build_judge(
            "simple",
            judges_dirs=[judges_dir],
            endpoint=srv.url,
            model="judge-m",
            api_key_env="EVOMERGE_TEST_JUDGE_KEY",
            cache=cache,
        )
        scores = judge.score(samples(2))
        judge.close()  # type: ignore[attr-defined]
    cache.close()
    assert [s.value for s in scores] == [6.0, 6.0]  # the reply is still parsed
    assert all(s.raw.startswith("you sent Authorization: Bearer ***\n") for s in scores)
    assert all(secret not in s.raw for s in scores)
    blob = b"".join(p.read_bytes() for p in tmp_path.glob("judge_cache.sqlite*"))
    assert b"Authorization: Bearer ***" in blob  # the reply was cached, redacted
    assert secret.encode() not in blob and b"SECRET" not in blob


def test_redact_hides_keys_and_bearer_tokens():
    from evomerge.judge._client import redact

    assert redact("key sk-abcdef here", ["sk-abcdef"]) == "key *** here"
    assert redact("Authorization: bearer eyJhbGciOi.x.y,") == "Authorization: bearer ***,"
    assert redact('{"a": "Bearer tok\\n5"}') == '{"a": "Bearer ***\\n5"}'  # JSON stays valid
    assert redact("a 7 b", ["7"]) == "a 7 b"  # too short to be a key: text is left alone
