"""Turning a judge model's reply into a number: pure functions, no I/O.

Two modes, chosen per judge YAML:

- ``last_line_integer``: the reply ends with the score on its own line. The last
  non-empty line may decorate it (``Score: 5``, ``**5**``, ``5/7``, ``評価：５``) but must
  hold exactly one integer; it must lie in the scale.
- ``logprob_expectation``: the judge answers with the score as one token. At the first
  non-blank position, the tokens of ``top_logprobs`` that read as a valid score are kept,
  their probabilities renormalized, and the expected score returned. NaN when none of
  the valid score tokens appears.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["ParseResult", "expected_score", "parse_last_line_integer"]

# A label ending in a colon, then the number with optional emphasis, optional "/max", optional period.
_LAST_LINE = re.compile(
    r"^(?:[^\d:：]*[:：])?\s*[*_`\[(]*\s*(\d+)\s*[*_`\])]*\s*(?:/\s*\d+)?\s*[.。]?\s*$"
)

ParseResult = tuple[float, str | None]  # (value or NaN, error or None)


def _normalize(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def parse_last_line_integer(text: str, lo: int, hi: int) -> ParseResult:
    """The integer on the last non-empty line of ``text`` if it lies in ``lo..hi``."""
    lines = [ln.strip() for ln in _normalize(text).splitlines() if ln.strip()]
    if not lines:
        return math.nan, "empty reply: expected the score on the last line"
    last = lines[-1]
    m = _LAST_LINE.match(last)
    if m is None:
        return (
            math.nan,
            f"no score on the last line (expected an integer in {lo}..{hi}, got {last[:80]!r})",
        )
    value = int(m.group(1))
    if not lo <= value <= hi:
        return math.nan, f"score {value} outside the scale {lo}..{hi}"
    return float(value), None


def _as_score(token: str, lo: int, hi: int) -> int | None:
    t = _normalize(token).strip()
    if not t.isdigit():
        return None
    v = int(t)
    return v if lo <= v <= hi else None


def expected_score(positions: Sequence[Mapping[str, Any]], lo: int, hi: int) -> ParseResult:
    """The probability-weighted mean score at the first non-blank token position.

    ``positions`` are per-token records ``{"token": str, "logprob": float,
    "top_logprobs": [{"token": str, "logprob": float}, ...]}``, as in OpenAI's
    ``choices[i].logprobs.content``.
    """
    if not positions:
        return (
            math.nan,
            "the endpoint returned no logprobs (does it support logprobs/top_logprobs?)",
        )
    pos = next((p for p in positions if str(p.get("token", "")).strip()), positions[0])
    candidates = [(str(t["token"]), float(t["logprob"])) for t in pos.get("top_logprobs") or []]
    if not any(tok == pos.get("token") for tok, _ in candidates) and "logprob" in pos:
        candidates.append((str(pos.get("token", "")), float(pos["logprob"])))  # the sampled token
    mass: dict[int, float] = {}
    seen: set[str] = set()
    for tok, lp in candidates:
        score = _as_score(tok, lo, hi)
        if score is None or tok in seen or not math.isfinite(lp):
            continue
        seen.add(tok)
        mass[score] = mass.get(score, 0.0) + math.exp(lp)
    total = sum(mass.values())
    if total <= 0.0:
        shown = ", ".join(repr(t) for t, _ in candidates[:8])
        return math.nan, f"no valid score token ({lo}..{hi}) among the top logprobs [{shown}]"
    return sum(s * p for s, p in mass.items()) / total, None
