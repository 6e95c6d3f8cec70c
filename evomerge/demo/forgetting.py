"""A base model and "continually pre-trained" descendants that learn a skill and forget.

``build_forgetting_models(out_dir, size=...)`` trains on CPU, deterministically:

1. ``base/``: a char-level Llama pre-trained (all tokens in the loss) on the demo's general
   chit-chat (``general.jsonl``): it knows which adjectives go with which topic, the
   general ability measured by the bundled lm-eval task ``general_chat_mc``;
2. one full-weight descendant per skill, continually pre-trained from ``base`` on that
   skill's text alone (so it loses some general ability):

   - ``register``: the translation-style task ``persona_register`` (plain sentence ->
     the persona's register), in the task's own prompt format;
   - ``facts``: the demo persona's facts in the chat format (``persona_facts_mc``).

The tokenizer covers every character of the demo data and the bundled tasks. The build is
cached: ``manifest.json`` (spec and file list) is written last; a later call with the same
spec returns at once, an incomplete build is redone.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from evomerge.demo._train import TrainSpec, deterministic_cpu, encode_pairs, train
from evomerge.demo.data import demo_alphabet, load_pairs
from evomerge.exceptions import ConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "SIZES",
    "SKILLS",
    "ForgettingModels",
    "ForgettingSize",
    "build_forgetting_models",
    "skill_texts",
]

SKILLS = ("register", "facts")
_BUILDER_VERSION = 1


@dataclass(frozen=True)
class ForgettingSize:
    """Model shape and training lengths. ``base_steps`` 0 keeps the base random."""

    hidden_size: int
    num_layers: int
    base_steps: int
    skill_steps: int
    intermediate_size: int | None = None  # default 2 x hidden
    num_heads: int = 4
    vocab_size: int | None = None  # default: the tokenizer's size
    max_positions: int = 256
    batch_size: int = 16
    base_lr: float = 4e-3
    skill_lr: float = 3e-3
    threads: int = 2
    seed: int = 0


SIZES: dict[str, ForgettingSize] = {
    # the example (examples/forgetting.yaml): about a minute on 2 cores
    "small": ForgettingSize(hidden_size=64, num_layers=4, base_steps=300, skill_steps=120),
    # tests: seconds
    "tiny": ForgettingSize(
        hidden_size=32, num_layers=2, base_steps=150, skill_steps=60, batch_size=16
    ),
    # the peer benchmark: a ~60M-parameter Llama shape (Llama's 32000-row vocabulary)
    "bench60m": ForgettingSize(
        hidden_size=512,
        num_layers=8,
        intermediate_size=1376,
        num_heads=8,
        vocab_size=32000,
        base_steps=0,
        skill_steps=40,
        batch_size=8,
        skill_lr=1e-3,
        threads=1,  # on a shared CPU two threads stall each other (minutes per step)
    ),
}


@dataclass(frozen=True)
class ForgettingModels:
    """Paths of a complete build: the base and one descendant per skill."""

    base: Path
    descendants: dict[str, Path]
    manifest: dict[str, Any]


def _task_alphabet() -> str:
    from evomerge.judge.harness import bundled_tasks_dir, read_records

    chars = set(demo_alphabet())
    for path in sorted(bundled_tasks_dir().glob("*.jsonl")):
        for row in read_records(path):
            for v in row.values():
                chars.update(str(v))
    chars.update("普通お嬢様: \n")
    return "".join(sorted(chars))


def skill_texts(skill: str) -> list[tuple[str, str]]:
    """(prompt, continuation) pairs a descendant is trained on, in its task's format."""
    from evomerge.judge.harness import bundled_tasks_dir, read_records

    if skill == "register":
        rows = read_records(bundled_tasks_dir() / "persona_register.train.jsonl")
        return [(f"普通: {r['source']}\nお嬢様:", f" {r['target']}\n") for r in rows]
    if skill == "facts":
        return [(f"user: {p.question}\nassistant: ", p.answer) for p in load_pairs("facts")]
    raise ConfigError(f"Unknown skill {skill!r}. Available: {', '.join(SKILLS)}")


def _encode(tok: Any, pairs: list[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
    """Whole-text language modelling examples (continual pre-training: every token counts)."""
    eos = int(tok.eos_token_id)
    out = []
    for prompt, cont in pairs:
        ids = [*tok(prompt + cont, add_special_tokens=False)["input_ids"], eos]
        out.append((ids, list(ids)))
    return out


def _config(spec: ForgettingSize, vocab: int) -> Any:
    from evomerge.testing.tiny import tiny_config

    return tiny_config(
        "llama",
        vocab_size=spec.vocab_size or vocab,
        num_layers=spec.num_layers,
        max_positions=spec.max_positions,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size or 2 * spec.hidden_size,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
    )


def _cached(root: Path, key: dict[str, Any]) -> ForgettingModels | None:
    try:
        manifest = json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("key") != key:
        return None
    models = ForgettingModels(
        base=root / "base",
        descendants={s: root / s for s in manifest["skills"]},
        manifest=manifest,
    )
    if all(
        (p / "model.safetensors").is_file() for p in [models.base, *models.descendants.values()]
    ):
        return models
    return None


def build_forgetting_models(
    out_dir: str | Path,
    *,
    size: str | ForgettingSize = "small",
    skills: tuple[str, ...] = SKILLS,
    progress: bool = False,
) -> ForgettingModels:
    """Train (or reuse, when cached) the base and one descendant per skill under ``out_dir``."""
    from transformers import LlamaForCausalLM

    from evomerge.testing.tiny import build_char_tokenizer

    if isinstance(size, str):
        if size not in SIZES:
            raise ConfigError(f"Unknown size {size!r}. Available: {', '.join(SIZES)}")
        spec = SIZES[size]
    else:
        spec = size
    for s in skills:
        skill_texts(s)  # unknown skills fail before any training
    root = Path(out_dir)
    key = {"version": _BUILDER_VERSION, "spec": asdict(spec), "skills": list(skills)}
    hit = _cached(root, key)
    if hit is not None:
        return hit
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    tok = build_char_tokenizer(root / "base", alphabet=_task_alphabet())
    losses: dict[str, float] = {}
    with deterministic_cpu(spec.threads):
        torch.manual_seed(spec.seed)
        base = LlamaForCausalLM(_config(spec, len(tok)))
        if spec.base_steps:
            examples = encode_pairs(tok, load_pairs("general"), answer_only=False)
            run = TrainSpec(
                steps=spec.base_steps,
                lr=spec.base_lr,
                batch_size=spec.batch_size,
                warmup=min(30, spec.base_steps // 4 + 1),
                answer_only=False,
                seed=spec.seed,
            )
            losses["base"] = train(
                base, examples, run, pad_id=tok.pad_token_id, desc="base", progress=progress
            )
        base.save_pretrained(str(root / "base"))
        for i, skill in enumerate(skills, start=1):
            model = copy.deepcopy(base)
            run = TrainSpec(
                steps=spec.skill_steps,
                lr=spec.skill_lr,
                batch_size=spec.batch_size,
                warmup=min(10, spec.skill_steps // 4 + 1),
                answer_only=False,
                seed=spec.seed + i,
            )
            losses[skill] = train(
                model,
                _encode(tok, skill_texts(skill)),
                run,
                pad_id=tok.pad_token_id,
                desc=skill,
                progress=progress,
            )
            model.save_pretrained(str(root / skill))
            tok.save_pretrained(str(root / skill))
    manifest = {"key": key, "skills": list(skills), "final_loss": losses}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    logger.info("forgetting models built in %s (losses %s)", root, losses)
    return ForgettingModels(
        base=root / "base", descendants={s: root / s for s in skills}, manifest=manifest
    )
