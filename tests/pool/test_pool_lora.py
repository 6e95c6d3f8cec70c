"""LoRA sources: the pool's full weights and task vectors equal peft's merge_and_unload."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from evomerge.exceptions import ArchitectureMismatchError, CheckpointError
from evomerge.pool import LoraAdapter, ModelPool
from evomerge.testing.tiny import build_lora_adapter, build_tiny_model

ATOL = 1e-6

# peft and transformers warn about the tiny test configs; nothing to act on.
pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]


def peft_merged(base: Path, adapter: Path) -> dict[str, torch.Tensor]:
    """The oracle: peft loads the adapter onto the base and merges it in float32."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    return {k: v.detach().clone() for k, v in merged.state_dict().items()}


def make_peft_adapter(
    base: Path, out: Path, *, seed: int, perturb_saved: bool = False, **lora: Any
) -> Path:
    """A LoRA adapter created and saved by peft itself, with random (non-zero) factors."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    pm = get_peft_model(model, LoraConfig(init_lora_weights=False, **lora))
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_" in name:
                p.normal_(0.0, 0.1)
            elif perturb_saved and "modules_to_save" in name:
                p.add_(torch.randn_like(p) * 0.1)
    pm.save_pretrained(str(out))
    return out


def assert_matches_peft(pool: ModelPool, i: int, merged: dict[str, torch.Tensor]) -> set[str]:
    """Compare every tensor with peft; returns the names whose task vector is non-zero."""
    changed = set()
    for name in pool.tensor_names:
        base = pool.base_tensor(name)
        full = pool.source_tensor(i, name)
        tv = pool.task_vector(i, name)
        torch.testing.assert_close(full, merged[name], atol=ATOL, rtol=0, msg=name)
        torch.testing.assert_close(tv, merged[name] - base, atol=ATOL, rtol=0, msg=name)
        if tv.abs().max() > 0:
            changed.add(name)
    return changed


def _targets(pool: ModelPool, *suffixes: str) -> set[str]:
    return {n for n in pool.tensor_names if n.endswith(suffixes)}


def test_plain_lora_matches_peft_and_untargeted_is_zero(tiny_models) -> None:
    pool = ModelPool.open(tiny_models.base, [tiny_models.lora_a])
    assert pool.is_lora(0)
    assert pool.model_ref(0) == f"{tiny_models.base}+{tiny_models.lora_a}"
    changed = assert_matches_peft(pool, 0, peft_merged(tiny_models.base, tiny_models.lora_a))
    assert changed == _targets(pool, "q_proj.weight", "v_proj.weight")
    name = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(pool.task_vector(0, name), torch.zeros(pool.info(name).shape))


def test_rslora_scale_matches_peft(tiny_models, tmp_path: Path) -> None:
    adapter = build_lora_adapter(
        tiny_models.base, tmp_path / "rs", seed=5, rank=4, alpha=8.0, use_rslora=True
    )
    lora = LoraAdapter.open(adapter)
    assert lora.scale("model.layers.0.self_attn.q_proj") == pytest.approx(8.0 / math.sqrt(4))
    pool = ModelPool.open(tiny_models.base, [adapter])
    assert assert_matches_peft(pool, 0, peft_merged(tiny_models.base, adapter))


def test_fan_in_fan_out_gpt2_conv1d_matches_peft(tmp_path: Path) -> None:
    base = build_tiny_model(
        tmp_path / "gpt2", model_type="gpt2", seed=0, num_layers=2, tokenizer=False
    )
    adapter = make_peft_adapter(
        base,
        tmp_path / "lora",
        seed=1,
        r=4,
        lora_alpha=8,
        target_modules=["c_attn", "c_fc"],
        fan_in_fan_out=True,
    )
    pool = ModelPool.open(base, [adapter])
    changed = assert_matches_peft(pool, 0, peft_merged(base, adapter))
    assert changed == _targets(pool, "c_attn.weight", "c_fc.weight")
    # The same factors read without the transpose no longer fit the Conv1D weights.
    cfg_path = adapter / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["fan_in_fan_out"] = False
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(
        ArchitectureMismatchError, match=r"c_attn\.weight.*\(96, 32\).*\(32, 96\).*fan_in_fan_out"
    ):
        ModelPool.open(base, [adapter])


def test_patterns_embedding_lora_and_modules_to_save_match_peft(
    tiny_models, tmp_path: Path
) -> None:
    adapter = make_peft_adapter(
        tiny_models.base,
        tmp_path / "lora",
        seed=2,
        perturb_saved=True,
        r=4,
        lora_alpha=8,
        target_modules=["q_proj", "v_proj", "embed_tokens"],
        modules_to_save=["lm_head"],
        rank_pattern={"layers.1.self_attn.q_proj": 2},
        alpha_pattern={"v_proj": 32},
    )
    lora = LoraAdapter.open(adapter)
    assert lora.rank("model.layers.1.self_attn.q_proj") == 2
    assert lora.rank("model.layers.2.self_attn.q_proj") == 4
    assert lora.scale("model.layers.0.self_attn.v_proj") == pytest.approx(32 / 4)
    assert "lm_head.weight" in lora.replaced_tensors
    pool = ModelPool.open(tiny_models.base, [adapter])
    changed = assert_matches_peft(pool, 0, peft_merged(tiny_models.base, adapter))
    expected = _targets(pool, "q_proj.weight", "v_proj.weight") | {
        "model.embed_tokens.weight",
        "lm_head.weight",
    }
    assert changed == expected


def test_lora_bias_matches_peft(tmp_path: Path) -> None:
    base = build_tiny_model(
        tmp_path / "qwen2", model_type="qwen2", seed=0, num_layers=2, tokenizer=False
    )
    adapter = make_peft_adapter(
        base, tmp_path / "lora", seed=3, r=2, target_modules=["q_proj"], lora_bias=True
    )
    pool = ModelPool.open(base, [adapter])
    changed = assert_matches_peft(pool, 0, peft_merged(base, adapter))
    assert changed == _targets(pool, "q_proj.weight", "q_proj.bias")


def _rewrite_keys(src: Path, dst: Path, rename) -> Path:
    shutil.copytree(src, dst)
    tensors = load_file(str(dst / "adapter_model.safetensors"))
    save_file({rename(k): v for k, v in tensors.items()}, str(dst / "adapter_model.safetensors"))
    return dst


def test_adapter_name_infix_is_understood(tiny_models, tmp_path: Path) -> None:
    named = _rewrite_keys(
        tiny_models.lora_a,
        tmp_path / "named",
        lambda k: k.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default."),
    )
    pool = ModelPool.open(tiny_models.base, [tiny_models.lora_a, named])
    assert pool.source_names == ["lora_a", "named"]
    for name in pool.tensor_names:
        assert torch.equal(pool.task_vector(0, name), pool.task_vector(1, name))


def test_two_adapter_names_in_one_file_are_refused(tiny_models, tmp_path: Path) -> None:
    counter = iter(range(10**6))
    mixed = _rewrite_keys(
        tiny_models.lora_a,
        tmp_path / "mixed",
        lambda k: k.replace(".weight", ".one.weight" if next(counter) % 2 else ".two.weight"),
    )
    with pytest.raises(CheckpointError, match="several adapters"):
        LoraAdapter.open(mixed)


def _edit_config(src: Path, dst: Path, **changes: Any) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "adapter_config.json").read_text())
    cfg.update(changes)
    (dst / "adapter_config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"use_dora": True}, "DoRA"),
        ({"peft_type": "IA3"}, "peft_type 'IA3'"),
        ({"r": 8}, r"gives rank 8, but lora_A has shape \(4, 32\)"),
        ({"lora_alpha": 0}, "lora_alpha must be a positive number"),
    ],
)
def test_unsupported_or_inconsistent_configs(
    tiny_models, tmp_path: Path, changes: dict, message: str
) -> None:
    bad = _edit_config(tiny_models.lora_a, tmp_path / "bad", **changes)
    with pytest.raises(CheckpointError, match=message):
        LoraAdapter.open(bad)


def test_missing_factor_is_named(tiny_models, tmp_path: Path) -> None:
    dst = shutil.copytree(tiny_models.lora_a, tmp_path / "half")
    tensors = load_file(str(dst / "adapter_model.safetensors"))
    dropped = "base_model.model.model.layers.2.self_attn.v_proj.lora_B.weight"
    del tensors[dropped]
    save_file(tensors, str(dst / "adapter_model.safetensors"))
    with pytest.raises(
        CheckpointError, match=r"'model\.layers\.2\.self_attn\.v_proj' has no lora_B"
    ):
        LoraAdapter.open(dst)


def test_adapter_of_another_architecture(tiny_models, tmp_path: Path) -> None:
    gpt2 = build_tiny_model(
        tmp_path / "gpt2", model_type="gpt2", seed=0, num_layers=2, tokenizer=False
    )
    with pytest.raises(
        ArchitectureMismatchError,
        match=r"targets tensor 'model\.layers\.\d\.self_attn\.q_proj\.weight'",
    ):
        ModelPool.open(gpt2, [tiny_models.lora_a])


def test_lora_in_bf16_is_summed_in_float32(tmp_path: Path) -> None:
    base = build_tiny_model(
        tmp_path / "bf16", seed=0, dtype=torch.bfloat16, num_layers=2, tokenizer=False
    )
    adapter = build_lora_adapter(base, tmp_path / "lora", seed=4)
    pool = ModelPool.open(base, [adapter])
    name = "model.layers.1.self_attn.v_proj.weight"
    lora = load_file(str(adapter / "adapter_model.safetensors"))
    a = lora["base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight"]
    b = lora["base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"]
    delta = (b @ a) * (8.0 / 4)
    torch.testing.assert_close(pool.task_vector(0, name), delta, atol=1e-7, rtol=0)
    full = pool.source_tensor(0, name)
    assert full.dtype == torch.float32
    torch.testing.assert_close(full, pool.base_tensor(name) + delta, atol=1e-7, rtol=0)
    assert pool.source_tensor(0, name, dtype=torch.bfloat16).dtype == torch.bfloat16
