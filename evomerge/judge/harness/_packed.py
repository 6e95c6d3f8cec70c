"""Log-likelihoods of every continuation of one context from a single row of one forward pass.

A multiple-choice document asks the harness for ``log P(choice | context)`` of each choice;
the harness's HF wrapper runs ``context + choice`` once per choice, so the context is
computed once per choice and the vocabulary projection runs at every position. Here a
context and all of its continuations share one row::

    tokens     c0 c1 c2 c3 | a0 a1 | b0 b1 b2      (continuations a = a0 a1 a2, b = b0..b3,
    positions   0  1  2  3 |  4  5 |  4  5  6       each without its last token)
    segment     0  0  0  0 |  1  1 |  2  2  2

Position ids restart after the context for every continuation, and the attention mask lets
a token see the context and the earlier tokens of its own segment only, so each
continuation's tokens see exactly what they would see in their own row: the same numbers up
to rounding (tests compare with the harness in ulps, for several model families). The
log-probability of a continuation's first token is read at the context's last position,
each later one at the previous token's position. Rows are padded on the left, so the
positions read (a row's last ones) line up at the right end of the batch, and only the
columns where some row reads go through the vocabulary projection (``logits_to_keep``),
where the model's forward accepts it.

:func:`group_by_context` groups requests, :func:`pack` builds a batch (pure tensor
function), :func:`score_packed` runs it. :mod:`evomerge.judge.harness._hflm` decides
when to use this path.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["ContextGroup", "Packed", "group_by_context", "pack", "score_packed"]


@dataclass(frozen=True)
class ContextGroup:
    """One context's token ids and its continuations: ``(request index, token ids)``."""

    context: tuple[int, ...]
    continuations: tuple[tuple[int, tuple[int, ...]], ...]

    @property
    def length(self) -> int:
        """Tokens in the packed row: the context, then each continuation but its last token."""
        return len(self.context) + sum(len(c) - 1 for _, c in self.continuations)


def group_by_context(
    requests: Sequence[tuple[Sequence[int], Sequence[int]]],
) -> list[ContextGroup]:
    """Requests ``(context ids, continuation ids)`` grouped by identical context, in order of
    first appearance; each continuation keeps its request's index."""
    groups: dict[tuple[int, ...], list[tuple[int, tuple[int, ...]]]] = {}
    for i, (context, continuation) in enumerate(requests):
        groups.setdefault(tuple(context), []).append((i, tuple(continuation)))
    return [ContextGroup(ctx, tuple(conts)) for ctx, conts in groups.items()]


@dataclass(frozen=True)
class Packed:
    """A batch of packed rows.

    ``input_ids``/``position_ids``: ``(B, L)``, left-padded; ``attention_mask``: ``(B, 1, L,
    L)`` additive (0 where a query may attend, the dtype's minimum elsewhere); ``keep``: the
    sorted positions whose logits are read; ``reads``: per request, ``(request index, row,
    indices into keep, token ids)``.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    attention_mask: torch.Tensor
    keep: torch.Tensor
    reads: tuple[tuple[int, int, torch.Tensor, torch.Tensor], ...]


def pack(
    groups: Sequence[ContextGroup],
    *,
    dtype: torch.dtype,
    device: torch.device | str = "cpu",
    pad_id: int = 0,
) -> Packed:
    """One row per group (see the module docstring). Every context and continuation must be
    non-empty."""
    if not groups:
        raise ValueError("pack needs at least one context group")
    width = max(g.length for g in groups)
    ids = torch.full((len(groups), width), pad_id, dtype=torch.long)
    pos = torch.zeros((len(groups), width), dtype=torch.long)
    seg = torch.full((len(groups), width), -1, dtype=torch.long)  # -1: padding
    where: list[tuple[int, int, list[int], tuple[int, ...]]] = []
    for row, g in enumerate(groups):
        if not g.context or any(not c for _, c in g.continuations):
            raise ValueError("every context and continuation needs at least one token")
        n, left = len(g.context), width - g.length  # left: padding before the row
        ids[row, left : left + n] = torch.tensor(g.context)
        pos[row, left : left + n] = torch.arange(n)
        seg[row, left : left + n] = 0
        start = left + n
        for k, (index, cont) in enumerate(g.continuations, start=1):
            body = cont[:-1]
            end = start + len(body)
            ids[row, start:end] = torch.tensor(body, dtype=torch.long)
            pos[row, start:end] = torch.arange(n, n + len(body))
            seg[row, start:end] = k
            where.append((index, row, [left + n - 1, *range(start, end)], cont))
            start = end
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    same = (seg[:, None, :] == 0) | (seg[:, None, :] == seg[:, :, None])
    allowed = causal[None] & same & (seg[:, None, :] >= 0)
    allowed |= torch.eye(width, dtype=torch.bool)[None]  # padding rows attend themselves
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
    keep = sorted({p for _, _, ps, _ in where for p in ps})
    column = {p: j for j, p in enumerate(keep)}
    reads = tuple(
        (
            index,
            row,
            torch.tensor([column[p] for p in ps], dtype=torch.long, device=device),
            torch.tensor(cont, dtype=torch.long, device=device),
        )
        for index, row, ps, cont in where
    )
    return Packed(
        input_ids=ids.to(device),
        position_ids=pos.to(device),
        attention_mask=mask[:, None].to(device),
        keep=torch.tensor(keep, dtype=torch.long, device=device),
        reads=reads,
    )


def _is_argmax(logp: torch.Tensor, tokens: torch.Tensor, picked: torch.Tensor) -> list[bool]:
    """Per row, whether ``tokens`` is ``logp.argmax(-1)`` (the first index of the maximum, as
    torch's argmax breaks ties), from a max reduction: several times faster than argmax on
    CPU, whose argmax over a vocabulary is slow in every dtype."""
    top = logp.amax(dim=-1)
    hits = (picked == top).tolist()
    for r, hit in enumerate(hits):
        if hit and bool((logp[r, : int(tokens[r])] == top[r]).any()):
            hits[r] = False  # an earlier index ties for the maximum: argmax is that one
    return hits


def score_packed(
    model: torch.nn.Module, packed: Packed, *, softmax_dtype: torch.dtype | None = None
) -> dict[int, tuple[float, bool]]:
    """``{request index: (log-likelihood, greedy)}`` for every read of ``packed``.

    As the harness computes them: log-softmax over the vocabulary in ``softmax_dtype`` (the
    logits' dtype when None), the continuation's log-probabilities summed in that dtype,
    ``greedy`` when every continuation token is the argmax at its position.
    """
    kwargs = {}
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        kwargs["logits_to_keep"] = packed.keep
    with torch.no_grad():
        logits = model(
            input_ids=packed.input_ids,
            attention_mask=packed.attention_mask,
            position_ids=packed.position_ids,
            use_cache=False,
            **kwargs,
        ).logits
        if "logits_to_keep" not in kwargs:
            logits = logits[:, packed.keep]
        # every read position of the batch at once: [positions, vocabulary]
        rows = torch.cat([torch.full_like(cols, row) for _, row, cols, _ in packed.reads])
        cols = torch.cat([cols for _, _, cols, _ in packed.reads])
        tokens = torch.cat([toks for _, _, _, toks in packed.reads])
        logp = F.log_softmax(logits[rows, cols], dim=-1, dtype=softmax_dtype)
        picked = logp.gather(1, tokens[:, None]).squeeze(1)
        hits = _is_argmax(logp, tokens, picked)
    out: dict[int, tuple[float, bool]] = {}
    start = 0
    for index, _, _, toks in packed.reads:
        end = start + len(toks)
        # summed per continuation in the log-softmax's dtype, as the harness sums
        out[index] = (float(picked[start:end].sum()), all(hits[start:end]))
        start = end
    return out
