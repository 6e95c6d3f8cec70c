"""``evomerge judge`` through typer's CliRunner: table, --json order, --calibrate."""

from __future__ import annotations

import json
import random
import time
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from evomerge.cli import app
from evomerge.judge import judge_file
from evomerge.judge._file import read_responses
from evomerge.testing.openai_server import FakeOpenAIServer

runner = CliRunner()
CALIBRATION = Path(
    str(resources.files("evomerge") / "data" / "calibration" / "persona_calibration.jsonl")
)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def test_table_with_a_local_judge(tmp_path: Path):
    path = write_jsonl(
        tmp_path / "r.jsonl",
        [
            {"question": "Where do you live?", "answer": "Kyoto.", "facts": ["Kyoto", "tea"]},
            {
                "question": "Favourite drink?",
                "answer": "Tea, from Kyoto.",
                "facts": ["Kyoto", "tea"],
            },
            {"question": "Hi", "answer": "Hello", "facts": []},
        ],
    )
    result = runner.invoke(app, ["judge", "--judge", "fact_recall", "--input", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:2] == ["#", "score"]
    assert lines[1].split()[:2] == ["1", "0.500"] and lines[2].split()[:2] == ["2", "1.000"]
    assert lines[3].split()[:2] == ["3", "nan"] and "no facts" in lines[3]
    assert lines[-1] == "mean 0.750 over 2 scored answer(s); 1 unscored"


def test_structured_choice_is_for_llm_judges_only(tmp_path: Path):
    path = write_jsonl(tmp_path / "r.jsonl", [{"question": "q", "answer": "a"}])
    result = runner.invoke(
        app, ["judge", "--judge", "length", "--input", str(path), "--structured-choice"]
    )
    assert result.exit_code == 2
    assert "--structured-choice applies to LLM judges only" in result.output


def test_json_keeps_input_order_with_an_llm_judge(tmp_path: Path):
    rows = [{"question": f"q{i}", "answer": f"answer number {i}"} for i in range(12)]
    path = write_jsonl(tmp_path / "r.jsonl", rows)
    rng = random.Random(0)

    def reply(req: dict[str, Any]) -> str:
        user = req["messages"][-1]["content"]
        i = next(int(r["answer"].split()[-1]) for r in reversed(rows) if r["answer"] in user)
        time.sleep(rng.random() * 0.05)  # replies finish out of order
        return f"Judgement for {i}.\n{i % 7 + 1}" if i != 5 else "no score here"

    with FakeOpenAIServer(reply=reply) as srv:
        result = runner.invoke(
            app,
            [
                "judge",
                "--judge",
                "personality",
                "--input",
                str(path),
                "--endpoint",
                srv.url,
                "--model",
                "j",
                "--json",
            ],
        )
    assert result.exit_code == 0, result.output
    objs = [json.loads(line) for line in result.output.splitlines()]
    assert len(objs) == 12 and all(set(o) == {"value", "raw", "error"} for o in objs)
    assert [o["value"] for o in objs] == [None if i == 5 else float(i % 7 + 1) for i in range(12)]
    assert objs[3]["raw"] == "Judgement for 3.\n4" and objs[3]["error"] is None
    assert objs[5]["raw"] == "no score here" and "no score" in objs[5]["error"]


def test_calibrate_reports_accuracy_and_misordered_pairs():
    records = read_responses(CALIBRATION, need_labels=True)
    kinds = {
        r.answer: json.loads(line)["kind"]
        for r, line in zip(records, CALIBRATION.read_text("utf-8").splitlines(), strict=True)
    }
    assert {"in_character", "off_persona", "padded", "overlong"} <= set(kinds.values())
    padded_reika = next(
        r.answer for r in records if r.group == "reika-drink" and kinds[r.answer] == "padded"
    )

    def reply(req: dict[str, Any]) -> str:
        user = req["messages"][-1]["content"]
        answer = next(a for a in kinds if a in user)
        if answer == padded_reika:
            return "Seems in character.\n6"  # the judge is fooled by this one: a tie with the good answer
        return "Good.\n6" if kinds[answer] == "in_character" else "Off.\n2"

    with FakeOpenAIServer(reply=reply) as srv:
        result = runner.invoke(
            app,
            [
                "judge",
                "--judge",
                "personality",
                "--input",
                str(CALIBRATION),
                "--endpoint",
                srv.url,
                "--model",
                "j",
                "--calibrate",
            ],
        )
        assert result.exit_code == 0, result.output
        assert "pairwise ordering accuracy: 8/9 = 0.889" in result.output
        line_no = [r.answer for r in records].index(padded_reika) + 1
        assert (
            f"misordered in group reika-drink: good line 1 (6.0) <= bad line {line_no} (6.0)"
            in result.output
        )

        result = runner.invoke(
            app,
            [
                "judge",
                "--judge",
                "personality",
                "--input",
                str(CALIBRATION),
                "--endpoint",
                srv.url,
                "--model",
                "j",
                "--calibrate",
                "--json",
            ],
        )
    last = json.loads(result.output.splitlines()[-1])
    assert last["calibration"]["pairs"] == 9 and last["calibration"]["correct"] == 8
    assert last["calibration"]["misordered"] == [
        {"group": "reika-drink", "good": 1, "bad": line_no, "good_value": 6.0, "bad_value": 6.0}
    ]


def test_calibrate_with_a_local_judge_and_judges_dir(tmp_path: Path):
    d = tmp_path / "more"
    d.mkdir()
    (d / "strict.yaml").write_text("user_template: 'A: {answer}'\n", encoding="utf-8")
    path = write_jsonl(
        tmp_path / "c.jsonl",
        [
            {"question": "q", "answer": "short", "label": "good", "group": 1},
            {"question": "q", "answer": "x" * 100, "label": "bad", "group": 1},
            {"question": "q", "answer": "", "label": "bad", "group": 1},
        ],
    )
    result = judge_file("length", path, calibrate=True, echo=lambda s: None)
    cal = result.calibration
    assert cal is not None and (cal.pairs, cal.correct, cal.accuracy) == (2, 1, 0.5)
    # the empty answer scores 0; the 100-char one ties with the good one (the default 1..400 range is lax)
    assert cal.misordered == [
        {"group": "1", "good": 1, "bad": 2, "good_value": 1.0, "bad_value": 1.0}
    ]
    with FakeOpenAIServer(reply="7") as srv:
        out: list[str] = []
        judge_file(
            "strict",
            path,
            judges_dirs=[d],
            endpoint=srv.url,
            model="m",
            as_json=True,
            echo=out.append,
        )
    assert [json.loads(o)["value"] for o in out] == [7.0, 7.0, 7.0]


def test_cli_errors_are_clean(tmp_path: Path):
    path = write_jsonl(tmp_path / "r.jsonl", [{"question": "q", "answer": "a"}])
    result = runner.invoke(app, ["judge", "--judge", "personality", "--input", str(path)])
    assert result.exit_code == 2 and "needs an endpoint and a model" in result.output
    result = runner.invoke(app, ["judge", "--judge", "length", "--input", str(path), "--calibrate"])
    assert result.exit_code == 2 and "r.jsonl:1: --calibrate needs 'label'" in result.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"question": "q"}\nnot json\n{"question": "q", "answer": "a", "label": "meh"}\n',
        encoding="utf-8",
    )
    result = runner.invoke(app, ["judge", "--judge", "length", "--input", str(bad)])
    assert result.exit_code == 2
    for fragment in (
        "bad.jsonl:1",
        "answer",
        "bad.jsonl:2: not valid JSON",
        "bad.jsonl:3",
        "label",
    ):
        assert fragment in result.output, fragment


@pytest.mark.parametrize("name", ["perplexity"])
def test_judges_needing_a_model_cannot_score_files(tmp_path: Path, name: str):
    path = write_jsonl(tmp_path / "r.jsonl", [{"question": "q", "answer": "a"}])
    result = runner.invoke(app, ["judge", "--judge", name, "--input", str(path)])
    assert result.exit_code == 2 and "error:" in result.output


def test_nothing_scored_exits_non_zero_after_the_table(tmp_path: Path):
    path = write_jsonl(
        tmp_path / "r.jsonl", [{"question": "q", "answer": f"a{i}"} for i in range(3)]
    )
    with FakeOpenAIServer(reply="I will not give a number.") as srv:
        result = runner.invoke(
            app,
            [
                "judge",
                "--judge",
                "personality",
                "--input",
                str(path),
                "--endpoint",
                srv.url,
                "--model",
                "j",
            ],
        )
    assert result.exit_code == 2, result.output
    assert "mean nan over 0 scored answer(s); 3 unscored" in result.output
    assert "scored none of the 3 answer(s)" in result.output


def test_a_hanging_endpoint_is_bounded_by_timeout_and_retries(tmp_path: Path):
    path = write_jsonl(tmp_path / "r.jsonl", [{"question": "q", "answer": "a"}])
    with FakeOpenAIServer() as srv:
        srv.hang_next(60.0, count=10)
        t0 = time.monotonic()
        result = runner.invoke(
            app,
            [
                "judge",
                "--judge",
                "personality",
                "--input",
                str(path),
                "--endpoint",
                srv.url,
                "--model",
                "j",
                "--timeout",
                "0.5",
                "--retries",
                "1",
            ],
        )
        elapsed = time.monotonic() - t0
        assert srv.request_count == 2  # one attempt + one retry
    assert result.exit_code == 2, result.output
    assert "timed out after 0.5s" in result.output
    assert elapsed < 10  # about 2 x 0.5 s plus a backoff; the endpoint hangs 60 s
