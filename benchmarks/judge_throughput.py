"""Judge throughput: judged answers per second against the local OpenAI-compatible test server.

The server answers every request after a fixed artificial latency (default 50 ms), so the
ideal rate at concurrency c is c / latency. Also measures the reply cache on a resumed
run: a second pass over the same answers with a new judge and a new cache object on the
same SQLite file; and the zero-latency rate, i.e. the CPU cost of client and server (both
in this process) that caps the rate on small machines. Prints one JSON object.

    python benchmarks/judge_throughput.py [--answers 128] [--latency 0.05] [--concurrency 1 8 32]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from evomerge.judge import ChatClient, Judge, JudgeCache, Sample, build_judge
from evomerge.testing.openai_server import FakeOpenAIServer


def _samples(n: int, tag: str) -> list[Sample]:
    return [
        Sample(question=f"Question {i}?", answer=f"Answer {tag}-{i}.", profile="A test persona.")
        for i in range(n)
    ]


def _judge(
    srv: FakeOpenAIServer, concurrency: int, cache: JudgeCache | None = None
) -> tuple[Judge, ChatClient]:
    client = ChatClient(endpoint=srv.url, model="bench", max_concurrency=concurrency, timeout=30.0)
    return build_judge("personality", client=client, cache=cache), client


def throughput(srv: FakeOpenAIServer, concurrency: int, answers: int) -> float:
    judge, client = _judge(srv, concurrency)
    try:
        judge.score(_samples(2, f"warmup{concurrency}"))  # connection + import warm-up
        t0 = time.perf_counter()
        scores = judge.score(_samples(answers, f"c{concurrency}"))
        elapsed = time.perf_counter() - t0
    finally:
        client.close()
    assert all(s.ok for s in scores)
    return answers / elapsed


def cache_resume(srv: FakeOpenAIServer, answers: int, concurrency: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "judge_cache.sqlite"
        samples = _samples(answers, "cache")
        before = srv.request_count
        cache = JudgeCache(path)
        judge, client = _judge(srv, concurrency, cache)
        t0 = time.perf_counter()
        judge.score(samples)
        first_s = time.perf_counter() - t0
        client.close()
        cache.close()
        first_requests = srv.request_count - before
        cache = JudgeCache(path)  # a resumed run: new process, same file
        judge, client = _judge(srv, concurrency, cache)
        t0 = time.perf_counter()
        judge.score(samples)
        second_s = time.perf_counter() - t0
        client.close()
        second_requests = srv.request_count - before - first_requests
        hits = cache.hits
        cache.close()
    return {
        "answers": answers,
        "first_pass_requests": first_requests,
        "second_pass_requests": second_requests,
        "second_pass_hit_rate": hits / answers,
        "first_pass_s": round(first_s, 3),
        "second_pass_s": round(second_s, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--answers", type=int, default=128)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    args = ap.parse_args()
    runs = []
    with FakeOpenAIServer(reply="Reasoning.\n5", latency=args.latency) as srv:
        for c in args.concurrency:
            rate = throughput(srv, c, args.answers)
            runs.append({"concurrency": c, "answers_per_s": round(rate, 2)})
        base = runs[0]["answers_per_s"]
        for r in runs:
            ideal = r["concurrency"] / args.latency
            r["ideal_answers_per_s"] = round(ideal, 2)
            r["speedup_vs_first"] = round(r["answers_per_s"] / base, 2)
            r["fraction_of_ideal"] = round(r["answers_per_s"] / ideal, 3)
        cache = cache_resume(srv, args.answers, max(args.concurrency))
        srv.latency = 0.0  # what the client + server cost in CPU alone: the ceiling on this machine
        ceiling = throughput(srv, max(args.concurrency), args.answers)
    print(
        json.dumps(
            {
                "benchmark": "judge_throughput",
                "latency_s": args.latency,
                "answers": args.answers,
                "runs": runs,
                "cache_resume": cache,
                "zero_latency_answers_per_s": round(ceiling, 2),
                "load_average": [round(x, 2) for x in os.getloadavg()],
                "machine": {
                    "nproc": os.cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                    "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
                        timespec="seconds"
                    ),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
