"""The example configs in examples/ and the README stay valid."""

from __future__ import annotations

from pathlib import Path

from evomerge.config import load_run_config
from evomerge.judge import available_judges

ROOT = Path(__file__).resolve().parents[1]


def test_persona_7b_example_validates_and_names_known_judges() -> None:
    cfg = load_run_config(ROOT / "examples" / "persona_7b.yaml")
    assert cfg.generation is not None and cfg.generation.backend == "vllm"
    assert cfg.judging is not None
    known = set(available_judges([]))
    assert {spec.type for spec in cfg.judging.judges.values()} <= known
    assert [o.name for o in cfg.judging.objectives] == ["persona", "general"]
    # relative data paths are resolved against the example's folder
    assert cfg.generation.prompts == ROOT / "examples" / "data" / "persona_questions.jsonl"
