"""Tiny models whose skills live in different layers: the data-flow demonstration's sources.

``build_layer_split_models(cache_dir)`` trains, on CPU and deterministically:

1. ``base/``: a small char-level Llama pre-trained on the bundled general chit-chat
   (``evomerge/data/demo/general.jsonl``);
2. ``style/``: the base fine-tuned on the persona's register (``style.jsonl``: the ojousama
   endings ですわ / ますわ, no persona facts) with only its **lower** half of layers trainable;
3. ``facts/``: the base fine-tuned on the persona's facts (``facts.jsonl``: her name, age,
   home town and likes, plain register) with only its **upper** half trainable.

Embeddings, final norm and head stay the base's in both fine-tunes, so a path may take the
style model's lower layers and the facts model's upper layers and read one residual
stream: the path, not a weight average, decides whether the persona speaks in her register
*and* knows her facts. All three are full float32 checkpoints with the char tokenizer.

The build is cached in ``cache_dir/<size>-<hash>`` (the hash covers the size spec, this
builder's version and the data files); it is written in a temporary folder and renamed into
place, so an interrupted build leaves nothing behind, and a concurrent build of the same
key reuses the finished one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from evomerge.atomic import atomic_directory
from evomerge.exceptions import ConfigError, ExportError
from evomerge.testing.tiny import build_char_tokenizer, tiny_config

logger = logging.getLogger(__name__)

__all__ = [
    "SIZES",
    "LayerSplitModels",
    "LayerSplitSize",
    "build_layer_split_models",
    "demo_data_dir",
]

BUILDER_VERSION = 1
_IGNORE = -100
_DATA_FILES = (
    "general.jsonl",
    "style.jsonl",
    "facts.jsonl",
    "prompts.jsonl",
    "heldout_prompts.jsonl",
)
_TEMPLATE_CHARS = "abcdefghijklmnopqrstuvwxyz: \n"


@dataclass(frozen=True)
class LayerSplitSize:
    """Model and training sizes."""

    hidden_size: int = 64
    num_layers: int = 4
    base_steps: int = 300
    finetune_steps: int = 300
    base_lr: float = 4e-3
    finetune_lr: float = 4e-3
    batch_size: int = 32
    max_positions: int = 128
    seed: int = 0


SIZES: dict[str, LayerSplitSize] = {
    "full": LayerSplitSize(),
    "small": LayerSplitSize(
        base_steps=200, finetune_steps=200, batch_size=24, base_lr=5e-3, finetune_lr=5e-3
    ),
}


@dataclass(frozen=True)
class LayerSplitModels:
    """Paths of a finished build; ``style_layers``/``facts_layers`` are the trained layers."""

    base: Path
    style: Path
    facts: Path
    style_layers: tuple[int, ...]
    facts_layers: tuple[int, ...]


def demo_data_dir() -> Path:
    """The bundled persona data (shared with the embedded demo)."""
    return Path(str(resources.files("evomerge") / "data" / "demo"))


def _pairs(name: str) -> list[tuple[str, str]]:
    path = demo_data_dir() / name
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: cannot read the persona data: {err}") from None
    return [(str(r["question"]), str(r["answer"])) for r in rows]


def _alphabet() -> str:
    chars = set(_TEMPLATE_CHARS)
    for name in _DATA_FILES:
        for line in (demo_data_dir() / name).read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            for key in ("question", "answer", "reference"):
                chars.update(str(row.get(key, "")))
    return "".join(sorted(chars))


def _key(size: LayerSplitSize) -> str:
    h = hashlib.sha256(json.dumps([BUILDER_VERSION, asdict(size)]).encode())
    for name in _DATA_FILES:
        h.update((demo_data_dir() / name).read_bytes())
    return h.hexdigest()[:12]


@contextmanager
def _deterministic(threads: int = 1) -> Iterator[None]:
    old = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(old[0])
        torch.use_deterministic_algorithms(old[1])


def _encode(
    tok: Any, pairs: Sequence[tuple[str, str]], *, answer_only: bool
) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels): chat prompt + answer + EOS; the prompt's labels masked if asked."""
    out = []
    for q, a in pairs:
        prompt = tok.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False
        )
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        a_ids = [*tok(a, add_special_tokens=False)["input_ids"], tok.eos_token_id]
        labels = ([_IGNORE] * len(p_ids) if answer_only else list(p_ids)) + a_ids
        out.append((p_ids + a_ids, labels))
    return out


def _train(
    model: Any,
    examples: list[tuple[list[int], list[int]]],
    *,
    steps: int,
    lr: float,
    size: LayerSplitSize,
    pad: int,
) -> float:
    """AdamW with warm-up and cosine decay over the trainable parameters; the last loss."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), weight_decay=0.0)
    rng = random.Random(size.seed)
    model.train()
    loss_value = math.nan
    for step in range(steps):
        batch = rng.sample(examples, min(size.batch_size, len(examples)))
        width = max(len(x) for x, _ in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)  # [B, T]
        labels = torch.full((len(batch), width), _IGNORE, dtype=torch.long)  # [B, T]
        mask = torch.zeros((len(batch), width), dtype=torch.long)  # [B, T]
        for i, (x, y) in enumerate(batch):
            ids[i, : len(x)], labels[i, : len(y)], mask[i, : len(x)] = (
                torch.tensor(x),
                torch.tensor(y),
                1,
            )
        warm = min(20, steps // 5 or 1)
        scale = (
            (step + 1) / warm
            if step < warm
            else 0.1 + 0.45 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))
        )
        for g in opt.param_groups:
            g["lr"] = lr * scale
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss_value = loss.item()
    model.eval()
    return loss_value


def _only_layers(model: Any, layers: Sequence[int]) -> None:
    """Freeze everything except the decoder layers ``layers``."""
    model.requires_grad_(False)
    for i in layers:
        model.model.layers[i].requires_grad_(True)


def _build(out: Path, size: LayerSplitSize) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    tok = build_char_tokenizer(alphabet=_alphabet())
    cfg = tiny_config(
        "llama",
        vocab_size=len(tok),
        num_layers=size.num_layers,
        max_positions=size.max_positions,
        hidden_size=size.hidden_size,
        intermediate_size=2 * size.hidden_size,
        num_attention_heads=4,
        num_key_value_heads=4,
    )
    pad = int(tok.pad_token_id)
    half = size.num_layers // 2
    lower, upper = tuple(range(half)), tuple(range(half, size.num_layers))
    losses: dict[str, float] = {}
    with _deterministic():
        torch.manual_seed(size.seed)
        base = AutoModelForCausalLM.from_config(cfg)
        general = _encode(tok, _pairs("general.jsonl"), answer_only=False)
        losses["base"] = _train(
            base, general, steps=size.base_steps, lr=size.base_lr, size=size, pad=pad
        )
        base.save_pretrained(str(out / "base"))
        tok.save_pretrained(str(out / "base"))
        for name, data, layers in (
            ("style", "style.jsonl", lower),
            ("facts", "facts.jsonl", upper),
        ):
            model = AutoModelForCausalLM.from_pretrained(str(out / "base"))
            _only_layers(model, layers)
            examples = _encode(tok, _pairs(data), answer_only=True)
            losses[name] = _train(
                model, examples, steps=size.finetune_steps, lr=size.finetune_lr, size=size, pad=pad
            )
            model.save_pretrained(str(out / name))
            tok.save_pretrained(str(out / name))
    logger.info("layer-split models built in %s (final losses %s)", out, losses)
    return {
        "size": asdict(size),
        "losses": losses,
        "style_layers": list(lower),
        "facts_layers": list(upper),
    }


def build_layer_split_models(
    cache_dir: str | Path, size: str | LayerSplitSize = "full"
) -> LayerSplitModels:
    """Build (or reuse) the three models in ``cache_dir``; see the module docstring."""
    spec = SIZES[size] if isinstance(size, str) else size
    if isinstance(size, str) and size not in SIZES:
        raise ConfigError(f"Unknown layer-split size {size!r}. Available: {', '.join(SIZES)}")
    out = Path(cache_dir) / f"{size if isinstance(size, str) else 'custom'}-{_key(spec)}"
    manifest = out / "manifest.json"
    if not manifest.is_file():
        try:
            with atomic_directory(out) as tmp:
                info = _build(tmp, spec)
                (tmp / "manifest.json").write_text(json.dumps(info, indent=2))
        except ExportError:
            if not manifest.is_file():  # not a concurrent build that finished first
                raise
    info = json.loads(manifest.read_text())
    return LayerSplitModels(
        base=out / "base",
        style=out / "style",
        facts=out / "facts",
        style_layers=tuple(info["style_layers"]),
        facts_layers=tuple(info["facts_layers"]),
    )
