"""Model references in a recipe, matched to a ModelPool's base and sources.

A reference is a path (or name) as mergekit writes it; ``"BASE+ADAPTER"`` is a LoRA
adapter applied to BASE. Local paths are compared after resolving them, so ``./m`` and
``m`` are the same model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from evomerge.merge.recipe import MergeRecipe
    from evomerge.pool import ModelPool

__all__ = ["BASE", "ModelRef", "canonical_path", "match_model", "parse_ref", "pool_for_recipe"]

BASE = -1  # match_model's answer for the pool's base model


def canonical_path(path: str | Path) -> str:
    """An absolute, resolved path for a local directory; other strings unchanged."""
    p = Path(path).expanduser()
    try:
        return str(p.resolve()) if p.exists() else str(path)
    except OSError:
        return str(path)


@dataclass(frozen=True)
class ModelRef:
    """A parsed reference: ``model`` and, for ``"BASE+ADAPTER"``, ``lora`` (both canonical)."""

    model: str
    lora: str | None = None

    @property
    def path(self) -> str:
        """The directory that holds this model's own weights (the adapter for a LoRA)."""
        return self.lora if self.lora is not None else self.model


def parse_ref(ref: str) -> ModelRef:
    """Parse mergekit's ``MODEL[+LORA]`` syntax."""
    ref = ref.strip()
    if "+" in ref:
        model, lora = ref.split("+", 1)
        return ModelRef(canonical_path(model), canonical_path(lora))
    return ModelRef(canonical_path(ref))


def match_model(ref: str, pool: ModelPool) -> int | None:
    """``BASE`` for the pool's base, a source index, or None when the pool lacks ``ref``."""
    want = parse_ref(ref)
    if want.lora is None and want.model == canonical_path(pool.base_path):
        return BASE
    for i in range(pool.num_sources):
        have = parse_ref(pool.model_ref(i))
        if have.path == want.path:
            return i
    return None


def lora_base_mismatch(ref: str, pool: ModelPool) -> str | None:
    """A problem when ``ref`` is ``X+ADAPTER`` with X other than the pool's base, else None."""
    parsed = parse_ref(ref)
    if parsed.lora is not None and parsed.model != canonical_path(pool.base_path):
        return f"LoRA reference {ref!r} applies the adapter to {parsed.model}, but the merge's base is {pool.base_path}"
    return None


def pool_for_recipe(recipe: MergeRecipe, *, allow_pickle: bool = False) -> ModelPool:
    """Open the ModelPool a recipe merges: its base model and every other input model.

    The base is ``base_model`` (or, without one, the first model). Each other model becomes a
    source in the recipe's order; ``"BASE+ADAPTER"`` makes the adapter directory the source
    (its BASE must be the base model); a model equal to the base is the base itself.

    Raises:
        MergeError: a LoRA reference names another base model.
        CheckpointError, UnsafeCheckpointError, ArchitectureMismatchError: from the pool.
    """
    from evomerge.exceptions import MergeError
    from evomerge.pool import ModelPool

    names = recipe.model_names()
    if not names:
        raise MergeError("models: the recipe lists no models; add at least one under 'models:'")
    base_ref = parse_ref(recipe.base_model if recipe.base_model is not None else names[0])
    if base_ref.lora is not None:
        raise MergeError(
            f"base_model: {recipe.base_model or names[0]!r} is a LoRA reference; the base must be a full model"
        )
    sources: list[str] = []
    problems: list[str] = []
    for ref in names:
        parsed = parse_ref(ref)
        if parsed.lora is None and parsed.model == base_ref.model:
            continue
        if parsed.lora is not None and parsed.model != base_ref.model:
            problems.append(
                f"models: LoRA reference {ref!r} applies to {parsed.model}, not the base {base_ref.model}"
            )
        if parsed.path not in sources:
            sources.append(parsed.path)
    if problems:
        raise MergeError("; ".join(problems))
    return ModelPool.open(base_ref.model, sources, allow_pickle=allow_pickle)
