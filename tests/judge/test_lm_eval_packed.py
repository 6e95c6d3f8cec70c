"""Packed log-likelihoods (one row per context, ``share_context``) against the harness's own
path (one row per request), request by request, for six model families; the row layout on
a hand-worked example; the fallbacks (rows longer than the model, a model that does not
honour the packed mask)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from evomerge.judge.harness import HarnessTasks
from evomerge.judge.harness._hflm import agree, live_hflm
from evomerge.judge.harness._packed import ContextGroup, group_by_context, pack

lm_eval = pytest.importorskip("lm_eval")

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

FAMILIES = ("llama", "mistral", "qwen2", "gemma", "gpt2", "gpt_neox")
#: float32 results of two summation orders: within this many units in the last place
ULPS = 64
#: scale of the random models' matrices (see family_model)
SHARPEN = 4.0


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= ULPS * 2.0**-23 * max(abs(a), abs(b), 1.0)


@pytest.fixture(scope="module")
def requests_() -> list[Any]:
    """Harness requests of two bundled multiple-choice tasks (with few-shot examples, so
    contexts of several lengths), as its evaluator builds them."""
    tasks = HarnessTasks(["persona_facts_mc", "general_chat_mc"], num_fewshot=1)
    out: list[Any] = []
    for task in tasks.tasks.values():
        task.set_fewshot_seed(seed=1234)
        task.build_all_requests(limit=6, rank=0, world_size=1)
        out += task.instances
    return out


@pytest.fixture(scope="module", params=FAMILIES)
def family_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from transformers import AutoModelForCausalLM

    from evomerge.testing.tiny import build_char_tokenizer, build_tiny_model
    from tests.judge.conftest import _task_chars

    root = tmp_path_factory.mktemp(f"packed_{request.param}")
    tok = build_char_tokenizer(root, alphabet=_task_chars())
    build_tiny_model(
        root,
        model_type=request.param,
        seed=3,
        vocab_size=len(tok),
        tokenizer=False,
        max_positions=512,
    )
    model = AutoModelForCausalLM.from_pretrained(root, dtype=torch.float32).eval()
    with torch.no_grad():  # sharper attention than random init's near-uniform: every family's
        for p in model.parameters():  # scores then move visibly with positions and mask
            if p.dim() == 2:
                p.mul_(SHARPEN)
    # the tokenizer object itself: AutoTokenizer would pick the family's own tokenizer class
    # for some families (qwen2), which does not read a character vocabulary the same way
    return model, tok


def _lm(model: Any, tok: Any, **kw: Any) -> Any:
    return live_hflm(pretrained=model, tokenizer=tok, batch_size=4, **kw)


def test_packed_rows_give_the_harness_log_likelihoods(
    family_model: Any, requests_: list[Any]
) -> None:
    model, tok = family_model
    theirs = _lm(model, tok, share_context=False).loglikelihood(requests_)
    packed = _lm(model, tok)
    packed.checked = True  # compare the packed path itself, not its first-call check
    ours = packed.loglikelihood(requests_)
    assert packed.share_context  # still packing: nothing fell back
    assert len(ours) == len(theirs) == len(requests_)
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert _close(a[0], b[0]), (i, a, b)
        assert a[1] == b[1], (i, a, b)
    # the fixture's contexts are shared (several choices each): packing had work to do
    assert len({r.args[0] for r in requests_}) < len(requests_)


def test_the_row_layout_on_a_worked_example() -> None:
    groups = group_by_context([([5, 6], [7, 8, 9]), ([4], [3]), ([5, 6], [10])])
    assert groups == [
        ContextGroup((5, 6), ((0, (7, 8, 9)), (2, (10,)))),
        ContextGroup((4,), ((1, (3,)),)),
    ]
    p = pack(groups, dtype=torch.float32, pad_id=0)
    # row 0: context 5 6, then 7 8 (9 is only predicted); 10 alone adds no token;
    # row 1 is padded on the left, so both rows' last positions line up
    assert p.input_ids.tolist() == [[5, 6, 7, 8], [0, 0, 0, 4]]
    assert p.position_ids.tolist() == [[0, 1, 2, 3], [0, 0, 0, 0]]
    allowed = (p.attention_mask[:, 0] == 0).tolist()
    assert allowed[0] == [
        [True, False, False, False],
        [True, True, False, False],
        [True, True, True, False],
        [True, True, True, True],
    ]
    # padding attends to itself only (no empty softmax rows); the token sees no padding
    assert allowed[1] == [
        [True, False, False, False],
        [False, True, False, False],
        [False, False, True, False],
        [False, False, False, True],
    ]
    keep = p.keep.tolist()
    reads = {
        i: (row, [keep[c] for c in cols.tolist()], toks.tolist()) for i, row, cols, toks in p.reads
    }
    assert reads == {0: (0, [1, 2, 3], [7, 8, 9]), 2: (0, [1], [10]), 1: (1, [3], [3])}
    assert keep == [1, 2, 3]  # position 0 is read by no row: not projected


def test_two_continuations_see_the_context_but_not_each_other() -> None:
    groups = group_by_context([([1, 2], [3, 4, 5]), ([1, 2], [6, 7])])
    p = pack(groups, dtype=torch.float32)
    allowed = (p.attention_mask[0, 0] == 0).tolist()
    # tokens: 1 2 | 3 4 | 6 ; the 6 sees 1 2 and itself, not 3 4
    assert allowed[4] == [True, True, False, False, True]
    assert p.position_ids.tolist() == [[0, 1, 2, 3, 2]]


def test_rows_longer_than_the_model_take_the_harness_path(
    lm_eval_models: dict[str, Path], requests_: list[Any]
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(lm_eval_models["base"], dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(lm_eval_models["base"])
    groups = group_by_context([(r.args[0], r.args[1]) for r in requests_])
    lengths = sorted(
        len(tok(r.args[0])["input_ids"])
        + len(tok(r.args[1], add_special_tokens=False)["input_ids"])
        for r in requests_
    )
    assert groups
    short = lengths[len(lengths) // 2]  # about half the contexts no longer fit when packed
    theirs = _lm(model, tok, share_context=False, max_length=short).loglikelihood(requests_)
    packed = _lm(model, tok, max_length=short)
    ours = packed.loglikelihood(requests_)
    assert packed.share_context
    for a, b in zip(ours, theirs, strict=True):
        assert _close(a[0], b[0]) and a[1] == b[1], (a, b)


def test_a_model_that_ignores_the_packed_layout_falls_back(
    monkeypatch: pytest.MonkeyPatch,
    lm_eval_models: dict[str, Path],
    requests_: list[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Stand-in for a model that ignores explicit position ids: positions counted along
    the row. The first call's check catches it, warns once, and every value is the harness's."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import evomerge.judge.harness._hflm as hflm
    import evomerge.judge.harness._packed as packing

    model = AutoModelForCausalLM.from_pretrained(lm_eval_models["base"], dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(lm_eval_models["base"])
    real = packing.pack

    def row_positions(*a: Any, **kw: Any) -> Any:
        p = real(*a, **kw)
        seq = torch.arange(p.input_ids.shape[1]).expand_as(p.input_ids).contiguous()
        return type(p)(p.input_ids, seq, p.attention_mask, p.keep, p.reads)

    monkeypatch.setattr(packing, "pack", row_positions)
    theirs = _lm(model, tok, share_context=False).loglikelihood(requests_)
    lm = _lm(model, tok)
    with caplog.at_level(logging.WARNING, logger=hflm.__name__):
        ours = lm.loglikelihood(requests_)
        again = lm.loglikelihood(requests_)
    assert not lm.share_context
    assert sum("packed rows" in r.getMessage() for r in caplog.records) == 1
    assert ours == theirs and again == theirs


def test_agreement_is_rounding_in_the_dtype() -> None:
    assert agree((-45.5, False), (-45.25, False), torch.bfloat16)  # one bfloat16 ulp at 45
    assert not agree((-45.5, False), (-47.5, False), torch.bfloat16)
    assert agree((-45.520649, False), (-45.520653, False), torch.float32)
    assert not agree((-45.52, False), (-45.53, False), torch.float32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_greedy_flags_are_torch_argmax_with_its_tie_rule(dtype: torch.dtype) -> None:
    from evomerge.judge.harness._packed import _is_argmax

    gen = torch.Generator().manual_seed(0)
    logp = torch.randint(-3, 1, (400, 50), generator=gen).to(dtype)  # many tied maxima
    # tokens: the argmax, a later index tying with it, or anything
    first = logp.argmax(dim=-1)
    tied_later = [int(row.eq(row.max()).nonzero()[-1]) for row in logp]
    anything = torch.randint(0, 50, (400,), generator=gen)
    for tokens in (first, torch.tensor(tied_later), anything):
        picked = logp.gather(1, tokens[:, None]).squeeze(1)
        assert _is_argmax(logp, tokens, picked) == (logp.argmax(dim=-1) == tokens).tolist()
    assert any(t != int(f) for t, f in zip(tied_later, first, strict=True))  # ties were there


def test_rolling_windows_of_a_long_text_take_the_packed_path_too(
    lm_eval_models: dict[str, Path],
) -> None:
    """Perplexity-style tasks (``loglikelihood_rolling``) ask for windows of one text, each
    with its own context: rows without sharing, still the harness's numbers."""
    from lm_eval.api.instance import Instance
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(lm_eval_models["base"], dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(lm_eval_models["base"])
    text = "user: お名前を教えてください。\nassistant: わたしの名前は白鳥麗華です。" * 4
    requests = [
        Instance(request_type="loglikelihood_rolling", doc={}, arguments=(t,), idx=i)
        for i, t in enumerate([text, text[:30]])
    ]
    theirs = _lm(model, tok, share_context=False, max_length=48).loglikelihood_rolling(requests)
    packed = _lm(model, tok, max_length=48)
    ours = packed.loglikelihood_rolling(requests)
    assert packed.share_context and packed.checked
    assert len(tok(text)["input_ids"]) > 2 * 48  # several windows
    for a, b in zip(ours, theirs, strict=True):
        assert _close(a, b), (a, b)
