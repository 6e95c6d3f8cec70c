"""``evomerge judge``: score a JSONL file of answers with one judge, and calibrate it.

Input lines are JSON objects: ``question``, ``answer`` and optionally ``profile``,
``examples``, ``reference``, ``context``, ``facts`` (list), ``label`` (``good``/``bad``)
and ``group`` (ties the good and bad variants of one question together).

Calibration: within each group every (good, bad) pair should be ordered good > bad;
the pairwise ordering accuracy is the fraction that is (ties and NaNs count as wrong).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from evomerge._yaml import format_validation_error, read_text
from evomerge.exceptions import ConfigError, JudgeError
from evomerge.judge._context import JudgeContext
from evomerge.judge._registry import build_judge, is_code_judge
from evomerge.judge._types import Sample, Score, needs_generator

__all__ = [
    "Calibration",
    "JudgeFileResult",
    "ResponseRecord",
    "calibrate_scores",
    "judge_file",
    "read_responses",
]


class ResponseRecord(BaseModel):
    """One line of RESPONSES.jsonl (unknown keys are ignored)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    question: str
    answer: str
    profile: str = ""
    examples: str = ""
    reference: str | None = None
    context: str = ""
    facts: tuple[str, ...] = ()
    label: Literal["good", "bad"] | None = None
    group: str | None = None

    @field_validator("examples", mode="before")
    @classmethod
    def _join_turns(cls, v: Any) -> Any:
        return "\n".join(map(str, v)) if isinstance(v, list) else v

    @field_validator("group", mode="before")
    @classmethod
    def _group_str(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) else v

    def sample(self) -> Sample:
        shared = {f.name for f in dataclasses.fields(Sample)}
        return Sample(**{k: v for k, v in self.model_dump().items() if k in shared})


def read_responses(path: str | Path, *, need_labels: bool = False) -> list[ResponseRecord]:
    """Parse RESPONSES.jsonl; every bad line is reported at once (``file:line: field: ...``)."""
    path = Path(path)
    lines = read_text(path, what="the answers file").splitlines()
    records, problems = [], []
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = ResponseRecord.model_validate(json.loads(line))
        except json.JSONDecodeError as err:
            problems.append(f"{path}:{no}: not valid JSON ({err.msg})")
            continue
        except ValidationError as err:
            problems.append(format_validation_error(f"{path}:{no}", err))
            continue
        if need_labels and (rec.label is None or rec.group is None):
            problems.append(
                f"{path}:{no}: --calibrate needs 'label' (good|bad) and 'group' on every line"
            )
        records.append(rec)
    if problems:
        raise ConfigError("\n".join(problems))
    if not records:
        raise ConfigError(f"{path}: no answers (expected JSON lines with 'question' and 'answer')")
    return records


@dataclass
class Calibration:
    """Pairwise ordering of good over bad answers within groups."""

    pairs: int
    correct: int
    misordered: list[dict[str, Any]] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / self.pairs if self.pairs else math.nan


def calibrate_scores(records: Sequence[ResponseRecord], scores: Sequence[Score]) -> Calibration:
    """Count (good, bad) pairs per group ordered good > bad; list the others (1-based lines)."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault(str(r.group), []).append(i)
    cal = Calibration(pairs=0, correct=0)
    for g, idx in groups.items():
        good = [i for i in idx if records[i].label == "good"]
        bad = [i for i in idx if records[i].label == "bad"]
        for i in good:
            for j in bad:
                cal.pairs += 1
                if scores[i].value > scores[j].value:  # False for ties and NaN
                    cal.correct += 1
                else:
                    cal.misordered.append(
                        {
                            "group": g,
                            "good": i + 1,
                            "bad": j + 1,
                            "good_value": _num(scores[i].value),
                            "bad_value": _num(scores[j].value),
                        }
                    )
    return cal


@dataclass
class JudgeFileResult:
    scores: list[Score]
    calibration: Calibration | None = None


def _num(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 6)


def _short(text: str | None, n: int) -> str:
    t = " ".join((text or "").split())
    return t if len(t) <= n else t[: n - 1] + "…"


def _table(records: Sequence[ResponseRecord], scores: Sequence[Score]) -> list[str]:
    rows = [f"{'#':>4}  {'score':>7}  {'label':<5}  {'group':<10}  {'question':<40}  error"]
    for i, (r, s) in enumerate(zip(records, scores, strict=True), 1):
        val = "nan" if not s.ok else f"{s.value:.3f}"
        note = s.error or (s.raw if s.not_applicable else "")
        rows.append(
            f"{i:>4}  {val:>7}  {r.label or '':<5}  {_short(r.group, 10):<10}  {_short(r.question, 40):<40}  {_short(note, 60)}"
        )
    good = [s.value for s in scores if s.ok]
    mean = f"{sum(good) / len(good):.3f}" if good else "nan"
    rows.append(
        f"mean {mean} over {len(good)} scored answer(s); {len(scores) - len(good)} unscored"
    )
    return rows


def judge_file(
    judge_name: str,
    input_path: str | Path,
    *,
    endpoint: str | None = None,
    model: str | None = None,
    api_key_env: str | None = None,
    structured_choice: bool | None = None,
    judges_dirs: Iterable[str | Path] = (),
    as_json: bool = False,
    calibrate: bool = False,
    timeout: float | None = None,
    retries: int | None = None,
    echo: Callable[[str], Any] = print,
) -> JudgeFileResult:
    """Score every answer of ``input_path`` with judge ``judge_name`` and ``echo`` the result.

    Prints a table, or with ``as_json`` one JSON object per answer (``value`` (null for
    NaN), ``raw``, ``error``) in input order; with ``calibrate`` also the pairwise ordering
    accuracy and the misordered pairs (as a last ``{"calibration": ...}`` line in JSON mode).
    No reply cache is used: calibration observes the judge as it is now.
    ``structured_choice`` (LLM judges only) overrides the judge YAML's field. ``timeout``
    (seconds per request) and ``retries`` (after the first attempt) bound an LLM judge's
    requests. Raises JudgeError when no answer was scored (after printing the table), and
    JudgeAuthError / JudgeUnavailableError when the endpoint refuses or answers nothing.
    """
    records = read_responses(input_path, need_labels=calibrate)
    if structured_choice is not None and is_code_judge(judge_name):
        raise ConfigError(
            f"--structured-choice applies to LLM judges only; {judge_name!r} is a local judge"
        )
    client_options: dict[str, Any] = {}
    if timeout is not None:
        if timeout <= 0:
            raise ConfigError(f"--timeout: must be > 0 seconds, got {timeout:g}")
        client_options["timeout"] = timeout
    if retries is not None:
        if retries < 0:
            raise ConfigError(f"--retries: must be >= 0, got {retries}")
        client_options["max_attempts"] = retries + 1
    judge = build_judge(
        judge_name,
        options=None if structured_choice is None else {"structured_choice": structured_choice},
        judges_dirs=judges_dirs,
        endpoint=endpoint,
        model=model,
        api_key_env=api_key_env,
        client_options=client_options,
        context=JudgeContext(source=f"judge {judge_name!r}", base_dir=Path.cwd()),
    )
    try:
        if needs_generator(judge):
            raise ConfigError(
                f"judge {judge_name!r} needs a candidate model; it cannot score a file of answers"
            )
        scores = judge.score([r.sample() for r in records])
    finally:
        close = getattr(judge, "close", None)
        if callable(close):
            close()
    cal = calibrate_scores(records, scores) if calibrate else None
    if as_json:
        for s in scores:
            echo(
                json.dumps(
                    {"value": _num(s.value), "raw": s.raw, "error": s.error}, ensure_ascii=False
                )
            )
        if cal is not None:
            echo(
                json.dumps(
                    {
                        "calibration": {
                            "pairs": cal.pairs,
                            "correct": cal.correct,
                            "accuracy": _num(cal.accuracy),
                            "misordered": cal.misordered,
                        }
                    },
                    ensure_ascii=False,
                )
            )
    else:
        for row in _table(records, scores):
            echo(row)
        if cal is not None:
            echo(f"pairwise ordering accuracy: {cal.correct}/{cal.pairs} = {cal.accuracy:.3f}")
            for m in cal.misordered:
                echo(
                    f"  misordered in group {m['group']}: good line {m['good']} ({m['good_value']}) "
                    f"<= bad line {m['bad']} ({m['bad_value']})"
                )
    if not any(s.ok for s in scores):
        first = next((s.error for s in scores if s.error), None) or "no error message"
        raise JudgeError(
            f"{input_path}: judge {judge_name!r} scored none of the {len(scores)} answer(s) "
            f"(first: {first})"
        )
    return JudgeFileResult(scores=scores, calibration=cal)
