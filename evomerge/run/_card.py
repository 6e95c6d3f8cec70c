"""The model card (README.md) of an exported trial: what was searched and what it scored."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from optuna.trial import FrozenTrial

from evomerge.config import RunConfig
from evomerge.merge import get_method
from evomerge.run import attrs as A
from evomerge.run._status import compact_setting
from evomerge.run._view import StudyView

if TYPE_CHECKING:
    from evomerge.merge import MergeRecipe

__all__ = ["model_card", "pruned_note"]


def _num(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _recipe_rows(recipe: MergeRecipe) -> list[str]:
    rows = ["| model | parameters |", "|---|---|"]
    for m in recipe.models:
        params = (
            ", ".join(f"{k} = {compact_setting(_plain(v))}" for k, v in m.parameters.items()) or "-"
        )
        rows.append(f"| `{m.model}` | {params} |")
    if recipe.parameters:
        params = ", ".join(
            f"{k} = {compact_setting(_plain(v))}" for k, v in recipe.parameters.items()
        )
        rows.append(f"| (all) | {params} |")
    return rows


def _plain(v: Any) -> Any:
    """A setting as YAML data (Conditional entries as dicts)."""
    if isinstance(v, list):
        return [e.model_dump(exclude_none=True) if hasattr(e, "model_dump") else e for e in v]
    return v.model_dump(exclude_none=True) if hasattr(v, "model_dump") else v


def pruned_note(n: int) -> str:
    """``", N pruned"`` when ``search.pruning`` stopped trials early, else nothing."""
    return f", {n} pruned (stopped early)" if n else ""


def model_card(config: RunConfig, study: StudyView, trial: FrozenTrial, recipe: MergeRecipe) -> str:
    """Markdown with a YAML header: the search summary, the trial's values, scores and recipe."""
    names, directions = study.objective_names, study.directions
    counts = study.counts()
    lines = [
        "---",
        "library_name: transformers",
        f"base_model: {recipe.base_model or config.models.base}",
        "tags: [merge, mergekit, evomerge]",
        "---",
        "",
        f"# {config.name}: trial {trial.number}",
        "",
        f"A `{recipe.merge_method}` merge found by evomerge's evolutionary search "
        f"(search space `{study.attr(A.SPACE, '?')}`, sampler `{config.search.sampler}`, "
        f"{counts.complete} complete{pruned_note(counts.pruned)} and {counts.failed} failed trials).",
        "",
        "## Scores",
        "",
        "| objective | direction | value |",
        "|---|---|---|",
    ]
    values = trial.values or []
    lines += [
        f"| {n} | {d} | {_num(v)} |" for n, d, v in zip(names, directions, values, strict=False)
    ]
    scores = trial.user_attrs.get(A.SCORES) or {}
    if scores:
        lines += ["", "| judge | mean score |", "|---|---|"]
        lines += [f"| {k} | {_num(v)} |" for k, v in scores.items()]
    lines += ["", "## Recipe", "", *_recipe_rows(recipe), ""]
    lines += [
        "Per-layer lists hold one value per layer (shown here as their distinct runs); "
        f"layers were searched in groups of {getattr(config.space_spec(), 'layer_granularity', 1)}.",
        "",
        "```yaml",
        recipe.to_mergekit_yaml().rstrip(),
        "```",
        "",
        "## Reproduce",
        "",
    ]
    method = get_method(recipe.merge_method)
    if method.mergekit:
        lines.append(
            "`mergekit-yaml mergekit.yaml OUT_DIR` (or `evomerge merge mergekit.yaml OUT_DIR`) rebuilds these weights."
        )
    else:
        lines.append(
            f"`evomerge merge mergekit.yaml OUT_DIR` rebuilds these weights; mergekit has no "
            f"`{recipe.merge_method}` method (it comes from a plug-in)."
        )
    if method.random:
        lines.append(
            f"This method drops coordinates at random: evomerge used merge seed {config.merge.seed} "
            f"(`evomerge merge --seed {config.merge.seed}` gives the same weights); mergekit draws "
            "other random numbers, so its result is similar, not identical."
        )
    samples = trial.user_attrs.get(A.SAMPLES) or []
    if samples:
        lines += ["", "## Sample answers", ""]
        for s in samples:
            lines += [f"**Q:** {s.get('question', '')}", "", f"**A:** {s.get('answer', '')}", ""]
    return "\n".join(lines).rstrip() + "\n"
