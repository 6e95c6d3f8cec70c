"""A fake :class:`~evomerge.generate.Generator` for tests of code that drives generators.

Deterministic and instant: answers are canned per prompt, or computed from the prompt and
the last loaded weights, or echo the prompt. Every call is recorded::

    gen = FakeGenerator(answers={"Hi?": "Hello!"})
    gen.load_weights([("w", torch.ones(2))])
    gen.generate(["Hi?", "Other"], GenerationParams())   # ["Hello!", "Other"]
    gen.load_calls[0]["w"]                               # tensor([1., 1.])

As the real backends: answers are cut at the first stop string and stripped; a prompt
"token" is one character, so answers are cut to ``max_new_tokens`` characters.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch

from evomerge.exceptions import GenerationError
from evomerge.generate import GenerationParams, cut_at_stop

__all__ = ["FakeGenerator"]

Respond = Callable[[str, Mapping[str, torch.Tensor]], str]
Nll = Callable[[str, Mapping[str, torch.Tensor]], float]


class FakeGenerator:
    """Canned/echo answers keyed by prompt; records ``load_weights`` and ``generate`` calls.

    Args (keyword-only):
        answers: prompt -> answer. Prompts not in it go to ``respond``, else are echoed.
        respond: ``(prompt, weights) -> answer`` for prompts not in ``answers``; ``weights``
            is the merged state of every ``load_weights`` so far (name -> tensor).
        nll: ``(text, weights) -> float`` for :meth:`score_texts`; without it
            ``score_texts`` raises NotImplementedError (as backends that cannot score).
        shapes: name -> shape the "model" accepts; when given, ``load_weights`` raises
            GenerationError for unknown names and wrong shapes like the real backends.
        keep_tensors: record detached CPU copies of loaded tensors (else only shapes).

    Thread-safe (one lock around each call).
    """

    def __init__(
        self,
        *,
        answers: Mapping[str, str] | None = None,
        respond: Respond | None = None,
        nll: Nll | None = None,
        shapes: Mapping[str, tuple[int, ...]] | None = None,
        keep_tensors: bool = True,
    ) -> None:
        self.answers = dict(answers or {})
        self._respond = respond
        self._nll = nll
        self._shapes = {k: tuple(v) for k, v in shapes.items()} if shapes is not None else None
        self._keep = keep_tensors
        self._lock = threading.Lock()
        self.weights: dict[str, torch.Tensor] = {}
        self.load_calls: list[dict[str, torch.Tensor]] = []
        self.load_shapes: list[dict[str, tuple[int, ...]]] = []
        self.generate_calls: list[tuple[list[str], GenerationParams]] = []
        self.score_calls: list[list[str]] = []

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Record the tensors (validated against ``shapes`` when given) and make them current."""
        if isinstance(named_tensors, Mapping):
            named_tensors = named_tensors.items()
        with self._lock:
            call: dict[str, torch.Tensor] = {}
            for name, t in named_tensors:
                if self._shapes is not None:
                    if name not in self._shapes:
                        raise GenerationError(
                            f"load_weights: unknown tensor {name!r}: not a parameter of this model"
                        )
                    if tuple(t.shape) != self._shapes[name]:
                        raise GenerationError(
                            f"load_weights: tensor {name!r} has shape {tuple(t.shape)} but the model's is {self._shapes[name]}"
                        )
                call[name] = t.detach().to("cpu", copy=True)
            self.weights.update(call)
            self.load_shapes.append({k: tuple(v.shape) for k, v in call.items()})
            self.load_calls.append(call if self._keep else {})

    def _answer(self, prompt: str) -> str:
        if prompt in self.answers:
            return self.answers[prompt]
        if self._respond is not None:
            return self._respond(prompt, self.weights)
        return prompt

    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[str]:
        """One answer per prompt: cut at stop strings, at ``max_new_tokens`` characters, stripped."""
        with self._lock:
            self.generate_calls.append((list(prompts), params))
            return [
                cut_at_stop(self._answer(p), params.stop)[: params.max_new_tokens].strip()
                for p in prompts
            ]

    def score_texts(self, texts: Sequence[str]) -> list[float]:
        """``nll(text, weights)`` per text; NotImplementedError when no ``nll`` was given."""
        with self._lock:
            if self._nll is None:
                raise NotImplementedError(
                    "FakeGenerator was built without nll=...; it cannot score texts"
                )
            self.score_calls.append(list(texts))
            return [float(self._nll(t, self.weights)) for t in texts]
