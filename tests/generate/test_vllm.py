"""The vllm backend without vLLM: pure mapping/sampling helpers, then the backend class
end to end against a fake ``vllm`` module injected through sys.modules."""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from safetensors.torch import load_file

from evomerge.exceptions import ConfigError, GenerationError
from evomerge.generate import GenerationConfig, GenerationParams, VLLMGenerator, build_generator
from evomerge.generate._vllm_map import (
    mean_nll_from_prompt_logprobs,
    sampling_kwargs,
    scoring_kwargs,
    vllm_prompt,
    vllm_weight_stream,
)


def test_weight_stream_skips_rotary_and_tied_head_and_renames() -> None:
    t = torch.zeros(1)
    named = [
        ("model.embed_tokens.weight", t),
        ("model.rotary_emb.inv_freq", t),
        ("model.layers.0.self_attn.rotary_emb.inv_freq", t),
        ("lm_head.weight", t),
        ("model.norm.weight", t),
    ]
    assert [n for n, _ in vllm_weight_stream(named, tie_word_embeddings=True)] == [
        "model.embed_tokens.weight",
        "model.norm.weight",
    ]
    untied = [
        n
        for n, _ in vllm_weight_stream(
            named, tie_word_embeddings=False, rename_prefixes={"model.": ""}
        )
    ]
    assert untied == ["embed_tokens.weight", "lm_head.weight", "norm.weight"]
    out = list(vllm_weight_stream(named[:1], tie_word_embeddings=False))
    assert out[0][1] is t  # tensors pass through untouched (no copy)


def test_sampling_kwargs() -> None:
    greedy = sampling_kwargs(
        GenerationParams(max_new_tokens=5, stop=("\nUser:",), seed=3, top_p=0.5)
    )
    assert greedy == {
        "max_tokens": 5,
        "temperature": 0.0,
        "stop": ["\nUser:"],
        "include_stop_str_in_output": False,
        "skip_special_tokens": True,
    }
    sampled = sampling_kwargs(
        GenerationParams(temperature=0.3, top_p=0.9, seed=11, max_new_tokens=512)
    )
    assert sampled["temperature"] == 0.3 and sampled["top_p"] == 0.9 and sampled["seed"] == 11
    assert sampled["max_tokens"] == 512 and sampled["stop"] == []
    assert scoring_kwargs()["prompt_logprobs"] == 1


class _Logprob:
    def __init__(self, v: float) -> None:
        self.logprob = v


def test_mean_nll_from_prompt_logprobs() -> None:
    ids = [5, 6, 7]
    lps = [None, {6: _Logprob(-1.0), 9: _Logprob(-0.5)}, {7: _Logprob(-2.0)}]
    assert mean_nll_from_prompt_logprobs(ids, lps) == pytest.approx(1.5)
    assert mean_nll_from_prompt_logprobs(ids, [None, {6: -1.0}, {7: -3.0}]) == pytest.approx(2.0)
    assert math.isnan(mean_nll_from_prompt_logprobs([5], [None]))
    assert math.isnan(mean_nll_from_prompt_logprobs(ids, None))


def test_vllm_prompt_avoids_double_bos(tiny_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_dir))
    assert vllm_prompt("hi", tok) == "hi"
    assert vllm_prompt("<s>hi", tok) == {"prompt_token_ids": [1, 12, 13]}
    assert vllm_prompt("<s>hi", None) == "<s>hi"


# -- a fake vllm module -------------------------------------------------------------------------


class FakeModel(torch.nn.Module):
    """Packs q/k/v like vLLM does, from HF names, and records every load."""

    def __init__(self, shapes: dict[str, tuple[int, ...]]) -> None:
        super().__init__()
        self.hf_shapes = shapes
        self.loads: list[list[str]] = []
        self.qkv = torch.nn.Parameter(torch.zeros(32 + 16 + 16, 32))

    def load_weights(self, weights: Any) -> set[str]:
        names = []
        for name, t in weights:
            names.append(name)
            if name == "model.layers.0.self_attn.q_proj.weight":
                self.qkv.data[:32].copy_(t)
            elif name not in self.hf_shapes:
                raise KeyError(name)
        self.loads.append(names)
        return set(names)


class FakeOutput:
    def __init__(self, text: str) -> None:
        self.text = text


class FakeRequestOutput:
    def __init__(self, prompt: Any, text: str) -> None:
        self.prompt = prompt
        self.outputs = [FakeOutput(text)]
        self.prompt_token_ids = [1, 2, 3]
        self.prompt_logprobs = [None, {2: _Logprob(-0.5)}, {3: _Logprob(-1.5)}]


class FakeSamplingParams:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


class FakeLLM:
    instances: ClassVar[list[FakeLLM]] = []
    shapes: ClassVar[dict[str, tuple[int, ...]]] = {}

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.model = FakeModel(self.shapes)
        self.resets = 0
        self.generate_calls: list[tuple[list[Any], FakeSamplingParams]] = []
        FakeLLM.instances.append(self)

    def apply_model(self, func: Any) -> list[Any]:
        return [func(self.model)]

    def reset_prefix_cache(self) -> bool:
        self.resets += 1
        return True

    def get_tokenizer(self) -> Any:
        return None

    def generate(
        self, prompts: list[Any], sp: FakeSamplingParams, use_tqdm: bool = True
    ) -> list[FakeRequestOutput]:
        self.generate_calls.append((list(prompts), sp))
        return [FakeRequestOutput(p, f"  answer to {p}\n") for p in prompts]


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch, tiny_dir: Path) -> types.ModuleType:
    from evomerge.generate._weights import checkpoint_shapes

    mod = types.ModuleType("vllm")
    mod.LLM = FakeLLM  # type: ignore[attr-defined]
    mod.SamplingParams = FakeSamplingParams  # type: ignore[attr-defined]
    FakeLLM.instances = []
    FakeLLM.shapes = checkpoint_shapes(tiny_dir) or {}
    monkeypatch.setitem(sys.modules, "vllm", mod)
    for var in ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_ALLOW_INSECURE_SERIALIZATION"):
        monkeypatch.setenv(var, "placeholder")  # so that teardown restores the original state
        monkeypatch.delenv(var)
    return mod


def _cfg(tmp_path: Path, **kw: Any) -> GenerationConfig:
    return GenerationConfig(prompts=tmp_path / "p.jsonl", backend="vllm", **kw)


def test_backend_end_to_end_with_fake_vllm(
    fake_vllm: types.ModuleType, tiny_dir: Path, perturbed_dir: Path, tmp_path: Path
) -> None:
    import os

    cfg = _cfg(tmp_path, backend_options={"gpu_memory_utilization": 0.5, "max_model_len": 256})
    gen = build_generator(cfg, model_path=tiny_dir, device="cuda")
    assert isinstance(gen, VLLMGenerator)
    (llm,) = FakeLLM.instances
    assert llm.kwargs["model"] == str(tiny_dir) and llm.kwargs["dtype"] == "bfloat16"
    assert llm.kwargs["gpu_memory_utilization"] == 0.5 and llm.kwargs["max_model_len"] == 256
    assert "trust_remote_code" not in llm.kwargs
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"

    weights = load_file(str(perturbed_dir / "model.safetensors"))
    gen.load_weights(weights.items())
    gen.load_weights(weights.items())
    assert len(FakeLLM.instances) == 1 and gen.llm is llm  # one engine for the run
    assert llm.resets == 2  # prefix cache reset after every update
    assert llm.model.loads[0] == list(weights)  # HF names in, vLLM packs them
    assert torch.equal(llm.model.qkv.data[:32], weights["model.layers.0.self_attn.q_proj.weight"])

    out = gen.generate(["p1", "p2"], GenerationParams(temperature=0.5, seed=4, stop=("X",)))
    assert out == ["answer to p1", "answer to p2"]
    prompts, sp = llm.generate_calls[-1]
    assert prompts == ["p1", "p2"]
    assert sp.kwargs == sampling_kwargs(GenerationParams(temperature=0.5, seed=4, stop=("X",)))
    assert gen.score_texts(["abc"]) == [pytest.approx(1.0)]
    assert llm.generate_calls[-1][1].kwargs["prompt_logprobs"] == 1


def test_bad_tensors_rejected_before_reaching_vllm(
    fake_vllm: types.ModuleType, tiny_dir: Path, tmp_path: Path
) -> None:
    gen = build_generator(_cfg(tmp_path), model_path=tiny_dir, device="cuda")
    (llm,) = FakeLLM.instances
    with pytest.raises(GenerationError, match=r"unknown tensor 'model.layers.0.mlp.up_prj.weight'"):
        gen.load_weights([("model.layers.0.mlp.up_prj.weight", torch.zeros(64, 32))])
    with pytest.raises(GenerationError, match=r"'model.norm.weight' has shape \(3,\)"):
        gen.load_weights([("model.norm.weight", torch.zeros(3))])
    assert llm.model.loads == [] and llm.resets == 0


def test_other_access_paths_and_errors(tiny_dir: Path) -> None:
    model = FakeModel({"w": (1,)})

    class RpcLLM:  # vLLM 0.7: collective_rpc only, callable(worker, *args)
        def __init__(self) -> None:
            self.worker = types.SimpleNamespace(model_runner=types.SimpleNamespace(model=model))

        def collective_rpc(self, method: Any, args: tuple[Any, ...] = ()) -> list[Any]:
            return [method(self.worker, *args)]

    gen = VLLMGenerator(
        llm=RpcLLM(), sampling_params_cls=FakeSamplingParams, tie_word_embeddings=False
    )
    gen.load_weights([("w", torch.ones(1))])
    assert model.loads == [["w"]]

    legacy = types.SimpleNamespace(
        llm_engine=types.SimpleNamespace(
            model_executor=types.SimpleNamespace(
                driver_worker=types.SimpleNamespace(model_runner=types.SimpleNamespace(model=model))
            )
        )
    )
    VLLMGenerator(
        llm=legacy, sampling_params_cls=FakeSamplingParams, tie_word_embeddings=False
    ).load_weights([("w", torch.ones(1))])
    assert len(model.loads) == 2

    bare = VLLMGenerator(
        llm=object(), sampling_params_cls=FakeSamplingParams, tie_word_embeddings=False
    )
    with pytest.raises(GenerationError, match=r"apply_model.*collective_rpc.*driver_worker"):
        bare.load_weights([("w", torch.ones(1))])
    rejecting = VLLMGenerator(
        llm=RpcLLM(), sampling_params_cls=FakeSamplingParams, tie_word_embeddings=False
    )
    with pytest.raises(GenerationError, match=r"vLLM rejected the new weights \(KeyError\)"):
        rejecting.load_weights([("unknown", torch.ones(1))])


def test_options_and_device_validation(
    fake_vllm: types.ModuleType, tiny_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(
        ConfigError, match=r"(?s)backend_options \(vllm\).*gpu_memory_utilization.*typo"
    ):
        build_generator(
            _cfg(tmp_path, backend_options={"gpu_memory_utilization": 2, "typo": 1}),
            model_path=tiny_dir,
            device="cuda",
        )
    with pytest.raises(GenerationError, match="CUDA_VISIBLE_DEVICES"):
        build_generator(_cfg(tmp_path), model_path=tiny_dir, device="cuda:1")
    build_generator(
        _cfg(tmp_path, backend_options={"engine_kwargs": {"tensor_parallel_size": 1}}),
        model_path=tiny_dir,
        device="auto",
        trust_remote_code=True,
    )
    assert FakeLLM.instances[-1].kwargs["tensor_parallel_size"] == 1
    assert FakeLLM.instances[-1].kwargs["trust_remote_code"] is True


def test_missing_vllm_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tiny_dir: Path, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(GenerationError, match=r"pip install 'evomerge\[vllm\]'"):
        build_generator(_cfg(tmp_path), model_path=tiny_dir, device="cuda")
