"""The ``Generator`` interface every backend implements."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

    from evomerge.generate._config import GenerationParams

__all__ = ["Generator"]


@runtime_checkable
class Generator(Protocol):
    """A causal LM that lives for a whole run and has its weights swapped between trials.

    Call order: construct once per worker, then per trial ``load_weights`` followed by any
    number of ``generate`` / ``score_texts`` calls, which use the weights of the last
    ``load_weights`` (or the checkpoint's, before the first). Not thread-safe: one
    generator belongs to one worker and is called from one thread at a time.

    Errors: ``GenerationError`` for an unknown tensor name or a shape mismatch in
    ``load_weights`` and for backend failures. ``score_texts`` may raise
    ``NotImplementedError`` on backends that cannot score.
    """

    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy tensors (Hugging Face names, any dtype/device) into the model, in place.

        Tensors not named keep their current values.
        """
        ...

    def generate(self, prompts: Sequence[str], params: GenerationParams) -> list[str]:
        """One answer per prompt (in order): decoded without the prompt, special tokens
        skipped, cut at the first stop string, stripped."""
        ...

    def score_texts(self, texts: Sequence[str]) -> list[float]:
        """Mean token negative log-likelihood (nats) of each text under the current weights
        (NaN for a text too short to predict any token)."""
        ...
