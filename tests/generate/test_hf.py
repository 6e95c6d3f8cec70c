"""The hf backend on a tiny real llama: determinism, batching, sampling, stops, in-place
weight updates (against a fresh reload), scoring (against transformers' own loss)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from evomerge.exceptions import GenerationError
from evomerge.generate import GenerationParams, HFGenerator

PROMPTS = ["user: hello there\nassistant: ", "hi", "user: What is your name?\nassistant: ", "ok."]
GREEDY = GenerationParams(max_new_tokens=12, batch_size=8)


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


@pytest.fixture
def gen(tiny_dir: Path) -> HFGenerator:
    return HFGenerator.from_pretrained(tiny_dir, device="cpu")


def test_loads_float32_on_cpu_by_default(gen: HFGenerator) -> None:
    assert gen.dtype == torch.float32
    assert gen.device == torch.device("cpu")


def test_greedy_is_deterministic_and_batch_equals_one_by_one(gen: HFGenerator) -> None:
    first = gen.generate(PROMPTS, GREEDY)
    assert first == gen.generate(PROMPTS, GREEDY)
    assert len(first) == len(PROMPTS) and all(isinstance(a, str) for a in first)
    assert any(first), "a tiny random model still emits characters"
    single = [gen.generate([p], GREEDY)[0] for p in PROMPTS]
    assert first == single
    in_pairs = gen.generate(PROMPTS, GREEDY.model_copy(update={"batch_size": 2}))
    assert in_pairs == first


def test_answers_match_plain_transformers_greedy_decoding(gen: HFGenerator) -> None:
    # oracle: transformers' own greedy generate on one unpadded prompt, new tokens only
    tok = gen.tokenizer
    for prompt, answer in zip(PROMPTS, gen.generate(PROMPTS, GREEDY), strict=True):
        ids = torch.tensor([tok(prompt)["input_ids"]])
        out = gen.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=12,
            do_sample=False,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        assert answer == tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()


def test_sampling_with_a_seed_is_reproducible(gen: HFGenerator) -> None:
    params = GenerationParams(max_new_tokens=16, temperature=1.0, top_p=0.95, seed=7)
    a = gen.generate(PROMPTS, params)
    torch.manual_seed(12345)  # the global RNG must not matter
    b = gen.generate(PROMPTS, params)
    assert a == b
    others = [gen.generate(PROMPTS, params.model_copy(update={"seed": s})) for s in (8, 9)]
    assert any(o != a for o in others), "different seeds should give different samples"
    assert a != gen.generate(PROMPTS, GREEDY.model_copy(update={"max_new_tokens": 16}))


def test_sampling_leaves_global_rng_untouched(gen: HFGenerator) -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    gen.generate(PROMPTS[:1], GenerationParams(max_new_tokens=4, temperature=1.0, seed=3))
    assert torch.equal(torch.rand(3), expected)


class _ForwardCounter:
    def __init__(self, model: torch.nn.Module) -> None:
        self.calls = 0
        model.register_forward_hook(self._hook)

    def _hook(self, *_: object) -> None:
        self.calls += 1


def test_stop_strings_cut_the_answer_and_stop_generation(gen: HFGenerator) -> None:
    long = GenerationParams(max_new_tokens=40)
    full = gen.generate([PROMPTS[0]], long)[0]
    assert len(full) >= 6, full
    stop = full[3:5]  # occurs in the unstopped answer
    expected = full[: full.find(stop)].strip()
    counter = _ForwardCounter(gen.model)
    cut = gen.generate([PROMPTS[0]], long.model_copy(update={"stop": (stop, "never-seen")}))[0]
    assert cut == expected
    assert counter.calls < 40, "generation must stop once a stop string appears"


def test_generation_stops_at_eos(gen: HFGenerator) -> None:
    # Make EOS the top token everywhere: a constant feature in every embedding, read only by
    # the final norm and only by the EOS row of lm_head.
    eos = gen.tokenizer.eos_token_id
    p = gen.parameters_by_name()
    emb = p["model.embed_tokens.weight"].detach().clone()
    emb[:, 0] = 50.0
    norm = torch.zeros_like(p["model.norm.weight"])
    norm[0] = 1.0
    head = torch.zeros_like(p["lm_head.weight"])
    head[eos, 0] = 10.0
    gen.load_weights(
        [("model.embed_tokens.weight", emb), ("model.norm.weight", norm), ("lm_head.weight", head)]
    )
    counter = _ForwardCounter(gen.model)
    out = gen.generate(PROMPTS[:2], GenerationParams(max_new_tokens=30))
    assert out == ["", ""]
    assert counter.calls == 1, "both rows emitted EOS at the first step; nothing more should run"


def test_in_place_update_equals_a_fresh_reload(
    gen: HFGenerator, tiny_dir: Path, perturbed_dir: Path
) -> None:
    model_before = gen.model
    params_before = {n: t for n, t in gen.parameters_by_name().items()}
    base_answers = gen.generate(PROMPTS, GREEDY)
    base_scores = gen.score_texts(PROMPTS)

    gen.load_weights(_weights(perturbed_dir).items(), strict=True)
    reloaded = HFGenerator.from_pretrained(perturbed_dir, device="cpu")

    assert gen.model is model_before
    for name, t in gen.parameters_by_name().items():
        assert t is params_before[name]  # same tensor objects, new values
    assert gen.generate(PROMPTS, GREEDY) == reloaded.generate(PROMPTS, GREEDY)
    assert gen.score_texts(PROMPTS) == reloaded.score_texts(PROMPTS)
    assert gen.score_texts(PROMPTS) != base_scores, "the perturbed weights must change the model"
    assert gen.generate(PROMPTS, GREEDY) != base_answers

    gen.load_weights(_weights(tiny_dir).items())  # and back
    assert gen.generate(PROMPTS, GREEDY) == base_answers
    assert gen.score_texts(PROMPTS) == base_scores


def test_load_weights_converts_dtype(gen: HFGenerator, perturbed_dir: Path) -> None:
    w = {k: v.double() for k, v in _weights(perturbed_dir).items()}
    gen.load_weights(w.items())
    got = gen.parameters_by_name()["model.layers.0.mlp.up_proj.weight"]
    assert got.dtype == torch.float32
    assert torch.equal(got, w["model.layers.0.mlp.up_proj.weight"].float())


def test_bad_name_and_shape_raise_naming_the_tensor(gen: HFGenerator) -> None:
    with pytest.raises(
        GenerationError,
        match=r"unknown tensor 'model\.layers\.0\.self_attn\.q_porj\.weight'.*q_proj",
    ):
        gen.load_weights([("model.layers.0.self_attn.q_porj.weight", torch.zeros(32, 32))])
    with pytest.raises(GenerationError, match=r"'model\.norm\.weight' has shape \(31,\).*\(32,\)"):
        gen.load_weights([("model.norm.weight", torch.zeros(31))])
    with pytest.raises(GenerationError, match="not given"):
        gen.load_weights([("model.norm.weight", torch.zeros(32))], strict=True)


def test_tied_embeddings(tied_dir: Path) -> None:
    gen = HFGenerator.from_pretrained(tied_dir, device="cpu")
    p = gen.parameters_by_name()
    assert p["lm_head.weight"] is p["model.embed_tokens.weight"]
    new = torch.randn_like(p["model.embed_tokens.weight"])
    gen.load_weights([("model.embed_tokens.weight", new)])  # what a tied checkpoint holds
    assert torch.equal(gen.model.lm_head.weight, new)
    gen.load_weights(
        [("model.embed_tokens.weight", new * 2), ("lm_head.weight", new * 2)]
    )  # both, equal
    assert torch.equal(gen.model.lm_head.weight, new * 2)
    with pytest.raises(GenerationError, match="tied"):
        gen.load_weights([("model.embed_tokens.weight", new), ("lm_head.weight", new + 1)])
    sd = load_file(str(tied_dir / "model.safetensors"))
    gen.load_weights(
        sd.items(), strict=True
    )  # the tied checkpoint has no lm_head.weight: still complete


def test_rotary_buffers_are_skipped(gen: HFGenerator) -> None:
    """A checkpoint's rotary ``inv_freq`` is recomputed by the model, never loaded: sending
    zeros for it leaves the model's buffer, hence its answers, unchanged."""
    rotary = dict(gen.model.named_buffers())["model.rotary_emb.inv_freq"]
    before, answers = rotary.clone(), gen.generate(PROMPTS, GREEDY)
    assert before.abs().min() > 0
    gen.load_weights([("model.rotary_emb.inv_freq", torch.zeros_like(before))])
    assert torch.equal(dict(gen.model.named_buffers())["model.rotary_emb.inv_freq"], before)
    assert gen.generate(PROMPTS, GREEDY) == answers


def test_score_texts_matches_transformers_loss(gen: HFGenerator) -> None:
    texts = ["hello there, friend", "a", "What is your name?", ""]
    scores = gen.score_texts(texts)
    for text, score in zip(texts[:3], scores[:3], strict=False):
        ids = torch.tensor([gen.tokenizer(text)["input_ids"]])
        if ids.shape[1] < 2:
            assert math.isnan(score)
            continue
        with torch.no_grad():
            loss = gen.model(input_ids=ids, labels=ids).loss
        assert score == pytest.approx(float(loss), rel=1e-5)
    assert math.isnan(scores[3])
    assert scores[0] > 0


def test_device_errors() -> None:
    from evomerge.generate import resolve_device

    with pytest.raises(GenerationError, match=r"'tpu'.*cpu, cuda, cuda:N or auto"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(GenerationError, match="CUDA is not available"):
            resolve_device("cuda:0")
        assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_generation_and_update(tiny_dir: Path, perturbed_dir: Path) -> None:
    gen = HFGenerator.from_pretrained(tiny_dir, device="cuda")
    assert gen.dtype == torch.bfloat16 and gen.device.type == "cuda"
    gen.load_weights(_weights(perturbed_dir).items(), strict=True)
    fresh = HFGenerator.from_pretrained(perturbed_dir, device="cuda")
    assert gen.generate(PROMPTS, GREEDY) == fresh.generate(PROMPTS, GREEDY)
    assert gen.score_texts(PROMPTS) == fresh.score_texts(PROMPTS)
    params = GenerationParams(max_new_tokens=16, temperature=0.8, seed=5)
    assert gen.generate(PROMPTS, params) == gen.generate(PROMPTS, params)


def test_checkpoint_generation_defaults_do_not_leak(tiny_dir: Path, tmp_path: Path) -> None:
    import json
    import shutil

    model_dir = tmp_path / "with_defaults"
    shutil.copytree(tiny_dir, model_dir)
    # a checkpoint that asks for sampling by default: greedy must stay greedy
    (model_dir / "generation_config.json").write_text(
        json.dumps(
            {
                "bos_token_id": 1,
                "eos_token_id": 2,
                "pad_token_id": 0,
                "do_sample": True,
                "temperature": 5.0,
                "top_k": 3,
                "repetition_penalty": 3.0,
            }
        )
    )
    plain = HFGenerator.from_pretrained(tiny_dir, device="cpu")
    odd = HFGenerator.from_pretrained(model_dir, device="cpu")
    assert odd.generate(PROMPTS, GREEDY) == plain.generate(PROMPTS, GREEDY)
    sampled = GenerationParams(max_new_tokens=12, temperature=0.9, seed=2)
    assert odd.generate(PROMPTS, sampled) == plain.generate(PROMPTS, sampled)
