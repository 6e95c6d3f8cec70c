"""The vllm backend against real vLLM (the CPU build), with the hf backend as the oracle.

Engines run in this process; fresh engines (about a second each once vLLM is imported)
are the reference for in-place reloads. vLLM tears down the process's distributed state
when an in-process engine is released, so every engine of this module stays alive until
the module ends (:func:`engine`). Prompts of the reload test are longer than vLLM's KV
block (128 tokens on CPU), so a prefix cache left from the previous weights would be hit.
"""

from __future__ import annotations

import gc
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from evomerge.exceptions import GenerationError
from evomerge.generate import (
    GenerationConfig,
    GenerationParams,
    HFGenerator,
    VLLMGenerator,
    VLLMOptions,
    build_generator,
)

pytestmark = pytest.mark.vllm

OPTS = VLLMOptions(max_model_len=512, kv_cache_memory_bytes=64 << 20)
GREEDY = GenerationParams(max_new_tokens=24, batch_size=16)
PROMPTS = [
    "hello there",
    "The cat sat on the mat.",
    "Why is the sky blue?",
    "x",
    "1 2 3 4 5",
    "Tell me a story about a dragon.",
    "What's your name?",
    "zzz ... ok!",
    "A: yes\nB:",
]
LONG_PROMPTS = [
    f"Story {i}: " + "once upon a time a merchant crossed the desert with nine camels and " * 3
    for i in range(4)
]


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def _vllm(model_dir: Path) -> VLLMGenerator:
    return VLLMGenerator.from_pretrained(model_dir, device="cpu", options=OPTS)


def _hf_answers(model_dir: Path, prompts: list[str], **load: dict[str, torch.Tensor]) -> list[str]:
    hf = HFGenerator.from_pretrained(model_dir, device="cpu")
    for tensors in load.values():
        hf.load_weights(tensors.items())
    return hf.generate(prompts, GREEDY)


@pytest.fixture(scope="module")
def engine(vllm_cpu: Any) -> Iterator[Callable[[Path], VLLMGenerator]]:
    """``engine(model_dir)``: one engine per checkpoint, started once, closed at the end."""
    started: dict[Path, VLLMGenerator] = {}

    def get(model_dir: Path) -> VLLMGenerator:
        if model_dir not in started:
            started[model_dir] = _vllm(model_dir)
        return started[model_dir]

    yield get
    for gen in started.values():
        gen.close()
    started.clear()
    gc.collect()


@pytest.fixture
def engines(engine: Callable[[Path], VLLMGenerator], vllm_models: Any) -> dict[str, VLLMGenerator]:
    """The engine of each architecture, started on its base checkpoint."""
    return {"llama": engine(vllm_models.llama), "qwen2": engine(vllm_models.qwen2)}


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("chat", [False, True], ids=["plain", "chat_template"])
def test_greedy_equals_hf_token_for_token(
    engines: dict[str, VLLMGenerator], vllm_models: Any, arch: str, chat: bool
) -> None:
    base, ft = getattr(vllm_models, arch), getattr(vllm_models, f"{arch}_ft")
    ft = ft[0] if isinstance(ft, tuple) else ft
    gen = engines[arch]
    gen.load_weights(_weights(ft).items())  # a fine-tune reloaded in place into the base engine
    prompts = list(PROMPTS)
    if chat:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(base))
        prompts = [
            tok.apply_chat_template(
                [{"role": "system", "content": "You are terse."}, {"role": "user", "content": p}],
                tokenize=False,
                add_generation_prompt=True,
            )
            for p in PROMPTS
        ]
        assert all(p.startswith("<s>") for p in prompts)  # the template writes BOS itself
    got = gen.generate(prompts, GREEDY)
    want = _hf_answers(ft, prompts)
    assert got == want
    assert len(set(got)) > 3 and sum(len(a) for a in got) > 50  # real, varied answers


def test_three_inplace_reloads_each_equal_a_fresh_engine(
    engines: dict[str, VLLMGenerator], engine: Callable[[Path], VLLMGenerator], vllm_models: Any
) -> None:
    gen = engines["llama"]
    cache = gen.llm.llm_engine.vllm_config.cache_config
    tok = gen.llm.get_tokenizer()
    assert cache.enable_prefix_caching
    assert min(len(tok(p)["input_ids"]) for p in LONG_PROMPTS) > cache.block_size
    gen.generate(LONG_PROMPTS, GREEDY)  # fill the prefix cache with the current weights
    seen = []
    for ft in vllm_models.llama_ft:
        gen.load_weights(_weights(ft).items())
        got = gen.generate(LONG_PROMPTS, GREEDY)
        want = engine(ft).generate(LONG_PROMPTS, GREEDY)  # a fresh engine on that checkpoint
        assert got == want, f"after reloading {ft.name}"
        seen.append(tuple(got))
    assert len(set(seen)) == 3  # three checkpoints, three different answer sets


def test_tied_embeddings_reload(engine: Callable[[Path], VLLMGenerator], vllm_models: Any) -> None:
    gen = engine(vllm_models.tied)
    gen.load_weights(_weights(vllm_models.tied).items())
    before = gen.generate(PROMPTS, GREEDY)
    tensors = _weights(vllm_models.tied_ft)
    assert "lm_head.weight" not in tensors  # tied: the head is the embedding
    gen.load_weights(tensors.items())
    got = gen.generate(PROMPTS, GREEDY)
    assert got == _hf_answers(vllm_models.tied_ft, PROMPTS)
    assert got != before


def test_merged_lora_sources(engines: dict[str, VLLMGenerator], vllm_models: Any) -> None:
    from evomerge.merge import MergeEngine
    from evomerge.merge.recipe import MergeRecipe, ModelEntry
    from evomerge.pool import ModelPool

    pool = ModelPool.open(vllm_models.llama, [vllm_models.lora_a, vllm_models.lora_b])
    engine = MergeEngine(pool, device="cpu", dtype=torch.float32, seed=0)
    recipe = MergeRecipe(
        merge_method="task_arithmetic",
        base_model=str(vllm_models.llama),
        models=tuple(
            ModelEntry(model=pool.model_ref(i), parameters={"weight": w})
            for i, w in enumerate((0.8, 0.6))
        ),
    )
    merged = {k: v.clone() for k, v in engine.materialize(recipe).items()}
    gen = engines["llama"]
    gen.load_weights(_weights(vllm_models.llama).items())
    base_answers = gen.generate(PROMPTS, GREEDY)
    gen.load_weights(merged.items())
    got = gen.generate(PROMPTS, GREEDY)
    assert got == _hf_answers(vllm_models.llama, PROMPTS, merged=merged)
    assert got != base_answers  # the adapters changed the model


def test_score_texts_equals_hf_mean_nll(
    engines: dict[str, VLLMGenerator], vllm_models: Any
) -> None:
    ft = vllm_models.qwen2_ft
    gen = engines["qwen2"]
    gen.load_weights(_weights(ft).items())
    texts = [*PROMPTS, LONG_PROMPTS[0], "a"]
    got = gen.score_texts(texts)
    want = HFGenerator.from_pretrained(ft, device="cpu").score_texts(texts)
    # the tokenizer adds BOS (as Llama's does), so even "a" has one token to predict
    assert not any(math.isnan(v) for v in got) and not any(math.isnan(v) for v in want)
    assert got == pytest.approx(want, abs=1e-3)
    assert len({round(v, 3) for v in got if not math.isnan(v)}) > 5  # not a constant


def test_no_process_wide_switches_left_behind(
    engines: dict[str, VLLMGenerator], vllm_models: Any
) -> None:
    """The engine started in-process and reloads work, yet neither variable is set."""
    gen = engines["llama"]
    gen.load_weights(_weights(vllm_models.llama_ft[1]).items())
    assert gen.strategy == "reload_weights"
    assert "VLLM_ALLOW_INSECURE_SERIALIZATION" not in os.environ
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in os.environ


def test_partial_layer_updates_are_refused(
    engines: dict[str, VLLMGenerator], vllm_models: Any
) -> None:
    gen = engines["llama"]
    q = {k: v for k, v in _weights(vllm_models.llama).items() if "q_proj" in k}
    with pytest.raises(GenerationError, match=r"only part of its tensors.*k_proj"):
        gen.load_weights(q.items())
    norms = {k: v for k, v in _weights(vllm_models.llama_ft[2]).items() if "norm" in k}
    gen.load_weights(_weights(vllm_models.llama).items())
    gen.load_weights(norms.items())  # whole layers only: allowed, the rest keeps its values
    hf = HFGenerator.from_pretrained(vllm_models.llama, device="cpu")
    hf.load_weights(norms.items())
    assert gen.generate(PROMPTS, GREEDY) == hf.generate(PROMPTS, GREEDY)


@pytest.mark.slow  # two more processes import vLLM: a minute on a loaded 2-core machine
def test_multiprocess_engine_reloads_without_insecure_serialization(
    vllm_cpu: Any, vllm_models: Any
) -> None:
    """``in_process: false``: the weights cross to the engine process as tensors of a
    method-name RPC, which vLLM accepts without VLLM_ALLOW_INSECURE_SERIALIZATION."""
    assert "VLLM_ALLOW_INSECURE_SERIALIZATION" not in os.environ
    opts = OPTS.model_copy(update={"in_process": False})
    gen = VLLMGenerator.from_pretrained(vllm_models.llama, device="cpu", options=opts)
    try:
        ft = vllm_models.llama_ft[0]
        gen.load_weights(_weights(ft).items())
        got = gen.generate(PROMPTS, GREEDY)
    finally:
        gen.close()  # its engine core is another process: this process's state is untouched
    assert got == _hf_answers(ft, PROMPTS)


def test_cuda_device_on_the_cpu_build_is_a_clear_error(
    vllm_cpu: Any, vllm_models: Any, tmp_path: Path
) -> None:
    cfg = GenerationConfig(prompts=tmp_path / "p.jsonl", backend="vllm")
    with pytest.raises(GenerationError, match="needs vLLM's CUDA build"):
        build_generator(cfg, model_path=vllm_models.llama, device="cuda")
