"""Training loops for the demo's tiny models: pre-training and (LoRA or full) fine-tuning.

Deterministic: fixed seeds, a fixed number of CPU threads and deterministic algorithms
for the duration of a call (restored afterwards). Not thread-safe (it changes torch's
global thread count and determinism flag while it runs).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from evomerge.demo.data import QAPair

logger = logging.getLogger(__name__)

__all__ = ["TrainSpec", "deterministic_cpu", "encode_pairs", "format_prompt", "train"]

IGNORE = -100


@dataclass(frozen=True)
class TrainSpec:
    """One training run: optimisation settings and whether the prompt counts in the loss."""

    steps: int
    lr: float
    batch_size: int = 32
    warmup: int = 20
    weight_decay: float = 0.0
    answer_only: bool = True
    seed: int = 0


@contextlib.contextmanager
def deterministic_cpu(threads: int) -> Iterator[None]:
    """Fix torch's intra-op threads and turn on deterministic algorithms; restore on exit."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old_det)
        torch.set_num_threads(old_threads)


def format_prompt(tokenizer: Any, question: str) -> str:
    """The model input for ``question``: the tokenizer's chat template with a generation prompt."""
    return str(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
        )
    )


def encode_pairs(
    tokenizer: Any, pairs: Sequence[QAPair], *, answer_only: bool
) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per dialogue: chat prompt + answer + EOS; prompt labels masked if ``answer_only``."""
    eos = int(tokenizer.eos_token_id)
    prompts = tokenizer(
        [format_prompt(tokenizer, p.question) for p in pairs], add_special_tokens=False
    )["input_ids"]
    answers = tokenizer([p.answer for p in pairs], add_special_tokens=False)["input_ids"]
    out = []
    for prompt, answer in zip(prompts, answers, strict=True):
        answer = [*answer, eos]
        labels = ([IGNORE] * len(prompt) if answer_only else list(prompt)) + answer
        out.append((list(prompt) + answer, labels))
    return out


def _batch(examples: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)  # [B, T], right-padded
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (x, y) in enumerate(examples):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def _lr_at(step: int, spec: TrainSpec) -> float:
    """Linear warm-up, then cosine decay to 10% of ``spec.lr``."""
    if step < spec.warmup:
        return spec.lr * (step + 1) / spec.warmup
    frac = (step - spec.warmup) / max(1, spec.steps - spec.warmup)
    return spec.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def train(
    model: torch.nn.Module,
    examples: Sequence[tuple[list[int], list[int]]],
    spec: TrainSpec,
    *,
    pad_id: int,
    desc: str = "train",
    progress: bool = False,
) -> float:
    """Train ``model`` in place on ``examples`` with AdamW; returns the mean loss of the last 10% of steps."""
    from tqdm.auto import tqdm

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay, betas=(0.9, 0.98))
    gen = torch.Generator().manual_seed(spec.seed)
    model.train()
    order: list[int] = []
    tail: list[float] = []
    bar = tqdm(range(spec.steps), desc=desc, disable=not progress, leave=False)
    for step in bar:
        if len(order) < spec.batch_size:
            order += torch.randperm(len(examples), generator=gen).tolist()
        idx, order = order[: spec.batch_size], order[spec.batch_size :]
        batch = _batch([examples[i] for i in idx], pad_id)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, spec)
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        value = loss.item()
        if step >= spec.steps - max(1, spec.steps // 10):
            tail.append(value)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{value:.3f}")
    model.eval()
    final = sum(tail) / len(tail)
    logger.info("%s: %d steps, final loss %.4f", desc, spec.steps, final)
    return final
