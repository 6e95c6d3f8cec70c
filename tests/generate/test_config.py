"""The generation: config section: defaults, every error at once, templates, paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from evomerge._yaml import validate_model
from evomerge.exceptions import ConfigError
from evomerge.generate import GenerationConfig, GenerationParams
from evomerge.templates import template_fields

LLAMA2 = "[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{question} [/INST]"


def test_defaults_match_the_contract() -> None:
    p = GenerationParams()
    assert (p.max_new_tokens, p.temperature, p.top_p, p.seed, p.stop, p.batch_size) == (
        128,
        0.0,
        1.0,
        0,
        (),
        8,
    )
    cfg = GenerationConfig(prompts=Path("p.jsonl"))
    assert cfg.backend == "hf" and cfg.template is None and cfg.retrieval is None


def test_every_error_reported_at_once_with_file_and_field() -> None:
    data = {
        "backend": "hff",
        "dtype": "fp8",
        "params": {
            "max_new_tokens": 0,
            "temperature": -1,
            "top_p": 1.5,
            "stop": ["", "x"],
            "bogus": 1,
        },
        "template": "{question} {persona}",
        "retrieval": {"model": "m", "threshold": 2},
    }
    with pytest.raises(ConfigError) as err:
        validate_model(GenerationConfig, data, source="run.yaml")
    msg = str(err.value)
    assert msg.startswith("run.yaml:")
    for needle in (
        "prompts",
        "Unknown generation backend 'hff'. Available: hf, vllm",
        "Unknown dtype 'fp8'",
        "params.max_new_tokens",
        "params.temperature",
        "params.top_p",
        "params.stop",
        "params.bogus",
        "unknown placeholder(s) {persona}",
        "retrieval.threshold",
    ):
        assert needle in msg, needle


def test_templates() -> None:
    cfg = GenerationConfig(
        prompts=Path("p"), template=LLAMA2, system_prompt="You are {name}. {profile}"
    )
    assert template_fields(cfg.template or "") == ["system", "question"]
    with pytest.raises(ValueError, match="must contain"):
        GenerationConfig(prompts=Path("p"), template="{system}")
    with pytest.raises(ValueError, match="positional"):
        GenerationConfig(prompts=Path("p"), template="{} {question}")
    with pytest.raises(ValueError, match="literal braces"):
        GenerationConfig(prompts=Path("p"), template="{question")
    with pytest.raises(ValueError, match=r"\{question\}"):
        GenerationConfig(prompts=Path("p"), system_prompt="{question}")
    assert (
        GenerationConfig(prompts=Path("p"), template="{{json}} {question}").template
        == "{{json}} {question}"
    )


def test_single_stop_string_and_frozen() -> None:
    p = GenerationParams(stop="\nUser:")  # type: ignore[arg-type]
    assert p.stop == ("\nUser:",)
    with pytest.raises(ValueError):
        p.seed = 3  # type: ignore[misc]


def test_resolve_paths(tmp_path: Path) -> None:
    cfg = GenerationConfig.model_validate(
        {
            "prompts": "data/p.jsonl",
            "heldout_prompts": "/abs/h.jsonl",
            "persona": "persona.yaml",
            "retrieval": {"model": "models/minilm"},
        }
    )
    r = cfg.resolve_paths(tmp_path)
    assert r.prompts == tmp_path / "data/p.jsonl"
    assert r.heldout_prompts == Path("/abs/h.jsonl")
    assert r.persona == tmp_path / "persona.yaml"
    assert r.retrieval is not None and r.retrieval.model == tmp_path / "models/minilm"
    assert cfg.prompts == Path("data/p.jsonl")  # the original is unchanged
