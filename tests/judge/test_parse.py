"""Score parsing: last-line integers and logprob expectations (pure functions)."""

from __future__ import annotations

import math

import pytest

from evomerge.judge._parse import expected_score, parse_last_line_integer


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is in character.\n6", 6.0),
        ("Reasoning...\nScore: 4\n\n", 4.0),
        ("step 1\nstep 2\n**7**", 7.0),
        ("fine\n5/7", 5.0),
        ("良い回答です。\n評価：５", 5.0),  # full-width digit and colon (NFKC)
        ("ok\n[3].", 3.0),
        ("1", 1.0),
    ],
)
def test_last_line_integer_accepts_decorated_scores(text: str, expected: float):
    assert parse_last_line_integer(text, 1, 7) == (expected, None)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty reply"),
        ("Score: 5\nbut I am not sure", "no score on the last line"),  # score not on the last line
        ("I give it 6 out of 7", "no score on the last line"),
        ("4.5", "no score on the last line"),
        ("3 or 4", "no score on the last line"),
        ("8", "outside the scale 1..7"),
        ("0", "outside the scale 1..7"),
    ],
)
def test_last_line_integer_rejects(text: str, fragment: str):
    value, error = parse_last_line_integer(text, 1, 7)
    assert math.isnan(value) and fragment in (error or "")


def pos(top: dict[str, float], token: str | None = None) -> dict:
    token = token if token is not None else next(iter(top))
    return {
        "token": token,
        "logprob": math.log(top[token]) if token in top else -5.0,
        "top_logprobs": [{"token": t, "logprob": math.log(p)} for t, p in top.items()],
    }


def test_expected_score_renormalizes_over_valid_tokens():
    value, err = expected_score([pos({"6": 0.6, "7": 0.2, "Sure": 0.2})], 1, 7)
    assert err is None and value == pytest.approx((6 * 0.6 + 7 * 0.2) / 0.8)


def test_expected_score_merges_spellings_of_one_score():
    value, _ = expected_score([pos({" 4": 0.3, "4": 0.3, "2": 0.4})], 1, 7)
    assert value == pytest.approx(4 * 0.6 + 2 * 0.4)


def test_expected_score_skips_leading_blank_token():
    value, _ = expected_score([pos({" ": 0.9, "3": 0.1}), pos({"2": 0.5, "3": 0.5})], 1, 7)
    assert value == pytest.approx(2.5)


def test_expected_score_uses_the_sampled_token_when_missing_from_top():
    p = pos({"x": 0.5}, token="5")  # sampled "5" is not in its top list
    value, _ = expected_score([p], 1, 7)
    assert value == 5.0


def test_expected_score_nan_without_valid_scores_or_logprobs():
    v1, e1 = expected_score([pos({"10": 0.5, "yes": 0.5})], 1, 7)
    v2, e2 = expected_score([], 1, 7)
    assert math.isnan(v1) and "no valid score token" in (e1 or "")
    assert math.isnan(v2) and "no logprobs" in (e2 or "")


def test_last_line_message_shows_at_most_80_characters_of_the_line():
    line = "x" * 79 + "YZ"  # 81 characters: Y is the 80th, Z the 81st
    _, error = parse_last_line_integer(line, 1, 7)
    assert "x" * 79 + "Y'" in (error or "") and "Z" not in (error or "")


def test_expected_score_counts_both_ends_of_the_scale_and_nothing_outside():
    value, _ = expected_score([pos({"1": 0.25, "7": 0.25, "0": 0.25, "8": 0.25})], 1, 7)
    assert value == pytest.approx(4.0)  # (1 + 7) / 2: 0 and 8 are not scores on 1..7


def test_expected_score_with_only_blank_tokens_reads_the_first_position():
    value, _ = expected_score([pos({" ": 0.5, "5": 0.5}), pos({"\n": 0.5, "2": 0.5})], 1, 7)
    assert value == 5.0


def test_expected_score_adds_a_sampled_token_that_sorts_after_the_top_ones():
    # "7" is not among the top tokens; "5" < "7" as strings, so only equality may decide
    value, _ = expected_score([pos({"5": 0.25}, token="7") | {"logprob": math.log(0.75)}], 1, 7)
    assert value == pytest.approx(5 * 0.25 + 7 * 0.75)


def test_expected_score_without_the_sampled_token_s_logprob_uses_the_top_list():
    p = {"token": "7", "top_logprobs": [{"token": "5", "logprob": math.log(0.5)}]}
    assert expected_score([p], 1, 7) == (5.0, None)


def test_expected_score_skips_non_finite_logprobs():
    p = pos({"6": 0.5})
    p["top_logprobs"].append({"token": "2", "logprob": math.nan})
    assert expected_score([p], 1, 7) == (6.0, None)


def test_expected_score_message_lists_at_most_8_candidates():
    top = {f"w{i}": 0.1 for i in range(10)}
    _, error = expected_score([pos(top)], 1, 7)
    assert "'w7'" in (error or "") and "'w8'" not in (error or "")
