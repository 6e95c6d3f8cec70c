"""Is the demo's story true of its models? Greedy answers of the sources and of fixed merges, scored.

``check_demo_models(models)`` loads the base with transformers, builds each merge in memory
with :class:`~evomerge.merge.MergeEngine` (the search's own merge path, LoRA adapters
included), answers the search and held-out prompts greedily and scores every answer with
the demo's objective (:mod:`evomerge.demo.objective`: style + facts + fluency).

The default merges (:func:`default_merges`) are the base, each source, the search's start
point (every weight 0.75), task arithmetic with one weight per source, and the per-layer
merge the sources were built for (style in the lower half of the layers, facts in the
upper half): it should beat every merge with one weight per source.

Single-threaded use only (it sets the model's weights per merge).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch

from evomerge.demo.data import DemoPrompt, load_prompts
from evomerge.demo.models import DemoModels, build_demo_models, default_cache_dir
from evomerge.demo.objective import score_answers
from evomerge.exceptions import MergeError
from evomerge.merge.recipe import ParamSetting

logger = logging.getLogger(__name__)

__all__ = ["SOURCE_NAMES", "check_demo_models", "default_merges", "format_check"]

SOURCE_NAMES = ("base", "style", "facts")
Weights = Mapping[str, float | Sequence[float]]


def default_merges(num_layers: int) -> dict[str, tuple[str, Weights]]:
    """name -> (mergekit method, weight per source: a number or one number per layer)."""
    half = num_layers // 2
    lower, upper = (
        [1.0] * half + [0.0] * (num_layers - half),
        [0.0] * half + [1.0] * (num_layers - half),
    )
    return {
        "base": ("task_arithmetic", {"style": 0.0, "facts": 0.0}),
        "style": ("task_arithmetic", {"style": 1.0, "facts": 0.0}),
        "facts": ("task_arithmetic", {"style": 0.0, "facts": 1.0}),
        "start (.75,.75)": ("task_arithmetic", {"style": 0.75, "facts": 0.75}),
        "uniform (1,.25)": ("task_arithmetic", {"style": 1.0, "facts": 0.25}),
        "uniform (.25,1)": ("task_arithmetic", {"style": 0.25, "facts": 1.0}),
        "uniform (1,1)": ("task_arithmetic", {"style": 1.0, "facts": 1.0}),
        "per-layer (1,0|0,1)": ("task_arithmetic", {"style": lower, "facts": upper}),
    }


def _weight(w: float | Sequence[float]) -> ParamSetting:
    """A scalar weight, or a per-layer list (mergekit gradient of length num_layers)."""
    if isinstance(w, int | float):
        return float(w)
    values: list[bool | int | float | str] = [float(x) for x in w]
    return values


def _generate(
    model: Any, tok: Any, prompts: Sequence[DemoPrompt], max_new_tokens: int
) -> list[str]:
    from evomerge.demo._train import format_prompt

    tok.padding_side = "left"
    enc = tok(
        [format_prompt(tok, p.question) for p in prompts],
        return_tensors="pt",
        padding=True,
        add_special_tokens=False,
    )
    with torch.no_grad():
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
    width = enc["input_ids"].shape[1]
    return [tok.decode(row[width:], skip_special_tokens=True).strip() for row in out]


def check_demo_models(
    models: DemoModels,
    *,
    merges: Mapping[str, tuple[str, Weights]] | None = None,
    splits: Sequence[Literal["search", "heldout"]] = ("search", "heldout"),
    max_new_tokens: int = 48,
    threads: int = 1,
    progress: bool = False,
) -> dict[str, Any]:
    """Score the sources and simple merges of ``models`` on the demo's prompt sets.

    ``merges`` maps a display name to ``(method, {"style": w, "facts": w})``; a weight is a
    number or a list of one number per layer (default: :func:`default_merges`, which
    includes the base and both sources).

    Returns ``{"scores": {split: {name: {style, facts, fluency, objective}}},
    "answers": {split: {name: [str]}}, "generate_seconds": {split: {name: s}},
    "best_merge": {split: name}, "margin": {split: best merge objective - best source's}}``.
    Raises what :class:`~evomerge.pool.ModelPool` / :class:`~evomerge.merge.MergeEngine` raise
    for unusable models or recipes.
    """
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer, LlamaForCausalLM

    from evomerge.merge import MergeEngine, MergeRecipe, ModelEntry
    from evomerge.pool import ModelPool

    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        tok = AutoTokenizer.from_pretrained(str(models.tokenizer))
        model = LlamaForCausalLM.from_pretrained(str(models.base)).eval()
        if merges is None:
            merges = default_merges(model.config.num_hidden_layers)
        pool = ModelPool.open(models.base, [models.style, models.facts], names=["style", "facts"])
        engine = MergeEngine(pool, methods=sorted({m for m, _ in merges.values()}))
        result: dict[str, Any] = {
            "scores": {},
            "answers": {},
            "generate_seconds": {},
            "best_merge": {},
            "margin": {},
        }
        prompt_sets = {split: load_prompts(split) for split in splits}
        for name, (method, weights) in tqdm(
            merges.items(), desc="demo check", disable=not progress
        ):
            recipe = MergeRecipe(
                merge_method=method,
                base_model=str(models.base),
                models=tuple(
                    ModelEntry(
                        model=pool.model_ref(i),
                        parameters={"weight": _weight(weights.get(src, 0.0))},
                    )
                    for i, src in enumerate(pool.source_names)
                ),
            )
            tensors = engine.materialize(recipe)
            missing, unexpected = model.load_state_dict(tensors, strict=False)
            if unexpected or any(not k.endswith("rotary_emb.inv_freq") for k in missing):
                raise MergeError(
                    f"merged tensors do not match the model: missing {missing}, unexpected {unexpected}"
                )
            for split, prompts in prompt_sets.items():
                start = time.perf_counter()
                answers = _generate(model, tok, prompts, max_new_tokens)
                result["generate_seconds"].setdefault(split, {})[name] = time.perf_counter() - start
                result["answers"].setdefault(split, {})[name] = answers
                result["scores"].setdefault(split, {})[name] = score_answers(prompts, answers)
        for split, table in result["scores"].items():
            candidates = {n: s["objective"] for n, s in table.items() if n not in SOURCE_NAMES}
            sources = [table[n]["objective"] for n in SOURCE_NAMES if n in table]
            if candidates and sources:
                best = max(candidates, key=lambda n: candidates[n])
                result["best_merge"][split] = best
                result["margin"][split] = candidates[best] - max(sources)
        return result
    finally:
        torch.set_num_threads(old_threads)


def format_check(result: Mapping[str, Any]) -> str:
    """A plain-text table of :func:`check_demo_models`'s scores, one block per split."""
    lines = []
    for split, table in result["scores"].items():
        lines.append(
            f"[{split}]  {'model':<24} {'style':>6} {'facts':>6} {'fluency':>7} {'objective':>9} {'gen s':>6}"
        )
        for name, s in table.items():
            secs = result["generate_seconds"][split][name]
            lines.append(
                f"{'':10}{name:<24} {s['style']:6.3f} {s['facts']:6.3f} {s['fluency']:7.2f} "
                f"{s['objective']:9.3f} {secs:6.2f}"
            )
        if split in result.get("best_merge", {}):
            lines.append(
                f"{'':10}best merge: {result['best_merge'][split]} "
                f"(beats the best source by {result['margin'][split]:+.3f})"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m evomerge.demo.check [--cache-dir DIR] [--size full|tiny]``: build (or reuse) and print the table."""
    import argparse

    parser = argparse.ArgumentParser(description="Score the demo's sources and simple merges.")
    parser.add_argument("--cache-dir", type=str, default=str(default_cache_dir()))
    parser.add_argument("--size", default="full")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    models = build_demo_models(args.cache_dir, size=args.size)
    print(
        f"models ready in {time.perf_counter() - start:.1f}s (build took {models.manifest.get('seconds')}s)"
    )
    print(format_check(check_demo_models(models)))


if __name__ == "__main__":
    main()
