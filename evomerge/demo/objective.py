"""The demo's objective: the persona's style, her facts and fluency, summed; its maximum.

Three local judges, each scored per answer and averaged over the prompts:

- ``style``: :class:`~evomerge.judge.StyleMarkersJudge`, the fraction of an answer's
  sentences that end in one of her endings (ですわ, ますわ, ですの, ますの, わよ, のよ); 0..1;
- ``facts``: ``fact_recall``, the fraction of a fact question's keywords (her name, age,
  ...) the answer mentions; 0..1, averaged over fact questions only;
- ``fluency``: ``chrf``, the character n-gram F-score of the answer against her reference
  answer (wording, well-formedness and length in one number); 0..100, weight 0.01.

``objective = style + facts + fluency / 100``, at most :func:`objective_max` (3.0), which
only word-perfect answers reach: the references pick among several wordings at random, so
no model matches them all and the objective keeps headroom. The search and every baseline
of the demo are scored with exactly this configuration.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evomerge.demo.data import DemoPrompt

__all__ = ["JUDGES", "STYLE_MARKERS", "judging_config", "objective_max", "score_answers"]

STYLE_MARKERS = r"(ですわ|ますわ|ですの|ますの|わよ|のよ)$"

# instance name -> (judge spec as in run.yaml, the judge's largest score)
JUDGES: dict[str, tuple[dict[str, Any], float]] = {
    "style": (
        {"type": "style_markers", "weight": 1.0, "options": {"markers": {STYLE_MARKERS: 1.0}}},
        1.0,
    ),
    "facts": ({"type": "fact_recall", "weight": 1.0}, 1.0),
    "fluency": ({"type": "chrf", "weight": 0.01}, 100.0),
}


def judging_config() -> dict[str, Any]:
    """The ``judging:`` section of the demo's run.yaml."""
    return {"judges": {name: dict(spec) for name, (spec, _) in JUDGES.items()}}


def objective_max() -> float:
    """The objective of perfect answers: sum of weight x largest score over the judges."""
    return float(sum(spec["weight"] * top for spec, top in JUDGES.values()))


def score_answers(prompts: Sequence[DemoPrompt], answers: Sequence[str]) -> dict[str, float]:
    """Per-judge means and ``objective`` of ``answers`` (one per prompt), as the search scores them."""
    from evomerge.judge import JudgingConfig, Sample, build_objective

    samples = [
        Sample(question=p.question, answer=a, reference=p.reference, facts=p.facts)
        for p, a in zip(prompts, answers, strict=True)
    ]
    with build_objective(JudgingConfig.model_validate(judging_config())) as objective:
        result = objective.evaluate(samples)
    out = {name: float(v) for name, v in result.judge_means.items()}
    out["objective"] = float(result.values[0])
    return out
