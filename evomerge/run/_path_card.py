"""The model card (README.md) of an exported data-flow trial: the path and what it scored."""

from __future__ import annotations

from typing import TYPE_CHECKING

from optuna.trial import FrozenTrial

from evomerge.config import RunConfig
from evomerge.run import attrs as A
from evomerge.run._card import _num, pruned_note
from evomerge.run._view import StudyView

if TYPE_CHECKING:
    from evomerge.merge import LayerPath

__all__ = ["path_card"]


def path_card(config: RunConfig, study: StudyView, trial: FrozenTrial, path: LayerPath) -> str:
    """Markdown with a YAML header: the search summary, the trial's values and its path
    (one row per layer: source, source layer, transition scale)."""
    counts = study.counts()
    emb = path.sources[path.embedding]
    lines = [
        "---",
        "library_name: transformers",
        f"base_model: {emb.model or path.embedding}",
        "tags: [merge, mergekit, evomerge, dataflow]",
        "---",
        "",
        f"# {config.name}: trial {trial.number}",
        "",
        f"A data-flow merge found by evomerge's evolutionary search (search space "
        f"`{study.attr(A.SPACE, '?')}`, sampler `{config.search.sampler}`, {counts.complete} "
        f"complete{pruned_note(counts.pruned)} and {counts.failed} failed trials): {len(path)} "
        "decoder layers taken from "
        f"{', '.join(f'`{n}`' for n in path.used_sources())}, with the embeddings, final "
        f"norm, head and tokenizer of `{path.embedding}`. It is a standard checkpoint: the "
        "transition scales are folded into each layer's `o_proj` and `down_proj`.",
        "",
        "## Scores",
        "",
        "| objective | direction | value |",
        "|---|---|---|",
    ]
    values = trial.values or []
    lines += [
        f"| {n} | {d} | {_num(v)} |"
        for n, d, v in zip(study.objective_names, study.directions, values, strict=False)
    ]
    scores = trial.user_attrs.get(A.SCORES) or {}
    if scores:
        lines += ["", "| judge | mean score |", "|---|---|"]
        lines += [f"| {k} | {_num(v)} |" for k, v in scores.items()]
    lines += ["", "## Path", "", "| layer | source | source layer | scale |", "|---|---|---|---|"]
    lines += [f"| {k} | {s.source} | {s.layer} | {s.scale:.4g} |" for k, s in enumerate(path.slots)]
    lines += ["", "| source | model |", "|---|---|"]
    lines += [f"| {n} | {path.sources[n].describe()} |" for n in path.used_sources()]
    hybrid = any(path.sources[n].recipe is not None for n in path.used_sources())
    cmd = (
        "mergekit-multi mergekit.yaml --intermediate-dir TMP --out-path OUT_DIR"
        if hybrid
        else "mergekit-yaml mergekit.yaml OUT_DIR"
    )
    lines += ["", "## Reproduce", "", f"`{cmd}` rebuilds these weights (a passthrough merge)."]
    samples = trial.user_attrs.get(A.SAMPLES) or []
    if samples:
        lines += ["", "## Sample answers", ""]
        for s in samples:
            lines += [f"**Q:** {s.get('question', '')}", "", f"**A:** {s.get('answer', '')}", ""]
    return "\n".join(lines).rstrip() + "\n"
