"""The public FakeGenerator used by search tests."""

from __future__ import annotations

import pytest
import torch

from evomerge.exceptions import GenerationError
from evomerge.generate import GenerationParams, Generator
from evomerge.testing.generation import FakeGenerator


def test_canned_echo_and_weight_dependent_answers() -> None:
    gen = FakeGenerator(
        answers={"Hi?": "  Hello! User: more"},
        respond=lambda p, w: f"{p}:{float(w['w'].sum()) if 'w' in w else 'none'}",
    )
    assert isinstance(gen, Generator)
    params = GenerationParams(stop=("User:",))
    assert gen.generate(["Hi?", "q"], params) == ["Hello!", "q:none"]
    gen.load_weights([("w", torch.ones(3))])
    assert gen.generate(["q"], params) == ["q:3.0"]
    assert gen.generate(["abcdef"], GenerationParams(max_new_tokens=3)) == ["abc"]
    assert FakeGenerator().generate(["echo me"], GenerationParams()) == ["echo me"]
    assert [c[0] for c in gen.generate_calls] == [["Hi?", "q"], ["q"], ["abcdef"]]


def test_records_loads_as_copies() -> None:
    gen = FakeGenerator()
    t = torch.zeros(2)
    gen.load_weights([("a", t), ("b", torch.ones(1, 2))])
    t.add_(5)  # later changes by the caller do not alter the record
    assert torch.equal(gen.load_calls[0]["a"], torch.zeros(2))
    assert gen.load_shapes == [{"a": (2,), "b": (1, 2)}]
    gen.load_weights([("a", torch.ones(2))])
    assert set(gen.weights) == {"a", "b"} and torch.equal(gen.weights["a"], torch.ones(2))
    light = FakeGenerator(keep_tensors=False)
    light.load_weights([("a", t)])
    assert light.load_calls == [{}] and light.load_shapes == [{"a": (2,)}]


def test_shape_checks_and_scoring() -> None:
    gen = FakeGenerator(shapes={"a": (2,)}, nll=lambda text, w: len(text) / 10)
    with pytest.raises(GenerationError, match="unknown tensor 'b'"):
        gen.load_weights([("b", torch.zeros(2))])
    with pytest.raises(GenerationError, match=r"'a' has shape \(3,\)"):
        gen.load_weights([("a", torch.zeros(3))])
    assert gen.score_texts(["abc", ""]) == [pytest.approx(0.3), 0.0]
    with pytest.raises(NotImplementedError):
        FakeGenerator().score_texts(["x"])
