"""Tiny random models, fine-tunes, LoRA adapters and tokenizers, built locally (no network).

Public so that tests, benchmarks and the demo share one factory::

    base = build_tiny_model(tmp / "base", seed=0)
    ft_a = perturb_model(base, tmp / "ft_a", seed=1)
    lora = build_lora_adapter(base, tmp / "lora_a", seed=2, rank=4)
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from evomerge.pool import is_vocab_tensor

logger = logging.getLogger(__name__)

__all__ = [
    "TINY_ARCH_KWARGS",
    "VLLM_CPU_KWARGS",
    "build_char_tokenizer",
    "build_lora_adapter",
    "build_tiny_model",
    "perturb_model",
    "tiny_config",
]

# Per model_type: the config keywords that give a tiny but real model of that family.
TINY_ARCH_KWARGS: dict[str, dict[str, Any]] = {
    "llama": dict(
        hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2
    ),
    "mistral": dict(
        hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2
    ),
    "qwen2": dict(
        hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2
    ),
    "gemma": dict(
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
    ),
    "gpt2": dict(n_embd=32, n_head=4, n_inner=64),
    "gpt_neox": dict(hidden_size=32, intermediate_size=64, num_attention_heads=4),
}

#: Config overrides that give a tiny model vLLM's CPU build can run: its CPU attention
#: takes head_dim 32, 64, 80, 96, ... (vLLM 0.32), not the 8 of the families above; here
#: 64 (hidden 256 over 4 heads).
VLLM_CPU_KWARGS: dict[str, Any] = dict(
    hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2
)

_DEFAULT_ALPHABET = " abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'\"-:;()\n"


def tiny_config(
    model_type: str = "llama",
    *,
    vocab_size: int = 96,
    num_layers: int = 4,
    max_positions: int = 256,
    tie_word_embeddings: bool = False,
    **overrides: Any,
) -> Any:
    """A transformers config for a tiny model of ``model_type`` (llama, mistral, qwen2, gemma,
    gpt2, gpt_neox)."""
    from transformers import AutoConfig

    if model_type not in TINY_ARCH_KWARGS:
        raise ValueError(
            f"Unknown tiny model_type {model_type!r}. Available: {', '.join(TINY_ARCH_KWARGS)}"
        )
    kw: dict[str, Any] = dict(TINY_ARCH_KWARGS[model_type])
    if model_type == "gpt2":
        kw.update(n_layer=num_layers, n_positions=max_positions, vocab_size=vocab_size)
    else:
        kw.update(
            num_hidden_layers=num_layers,
            max_position_embeddings=max_positions,
            vocab_size=vocab_size,
            tie_word_embeddings=tie_word_embeddings,
        )
    kw.update(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    kw.update(overrides)
    return AutoConfig.for_model(model_type, **kw)


def build_char_tokenizer(
    out_dir: str | Path | None = None, *, alphabet: str | Iterable[str] = _DEFAULT_ALPHABET
) -> Any:
    """A character-level fast tokenizer (pad=0, bos=1, eos=2, unk=3), saved to ``out_dir`` if given.

    Carries a minimal chat template so chat-formatted prompts work on tiny models.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars: list[str] = []
    for ch in alphabet:
        if ch not in chars:
            chars.append(ch)
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )
    fast.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    if out_dir is not None:
        fast.save_pretrained(str(out_dir))
    return fast


def build_tiny_model(
    out_dir: str | Path,
    *,
    model_type: str = "llama",
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    vocab_size: int | None = None,
    num_layers: int = 4,
    max_shard_size: str | None = None,
    tokenizer: bool = True,
    **config_overrides: Any,
) -> Path:
    """Build and save a tiny random causal LM as safetensors (sharded when ``max_shard_size``)."""
    from transformers import AutoModelForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_char_tokenizer(out if tokenizer else None)
    vocab = vocab_size if vocab_size is not None else max(96, len(tok))
    cfg = tiny_config(model_type, vocab_size=vocab, num_layers=num_layers, **config_overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    # Norm weights start at 1.0 (or 0 for gemma); give them some spread so merges move them.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    model = model.to(dtype)
    kwargs: dict[str, Any] = {"safe_serialization": True}
    if max_shard_size is not None:
        kwargs["max_shard_size"] = max_shard_size
    model.save_pretrained(str(out), **kwargs)
    logger.debug("built tiny %s model at %s", model_type, out)
    return out


def _weight_files(model_dir: Path) -> list[Path]:
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors files in {model_dir}")
    return files


def perturb_model(
    base_dir: str | Path,
    out_dir: str | Path,
    *,
    seed: int,
    scale: float = 0.02,
    fraction: float = 1.0,
    vocab_size: int | None = None,
    skip: Sequence[str] = (),
) -> Path:
    """A "fine-tune" of ``base_dir``: every tensor plus Gaussian noise (``scale`` x its std).

    ``fraction`` < 1 changes only that random fraction of coordinates (sparse updates).
    ``vocab_size`` grows or shrinks embedding/lm_head rows (extra rows are random).
    Tensors whose name contains any of ``skip`` are copied unchanged.
    """
    base, out = Path(base_dir), Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(base, out)
    gen = torch.Generator().manual_seed(seed)
    for f in _weight_files(out):
        tensors = load_file(str(f))
        new: dict[str, torch.Tensor] = {}
        for name, t in tensors.items():
            x = t.float()
            if not any(s in name for s in skip):
                std = float(x.std()) if x.numel() > 1 else 1.0
                noise = torch.randn(x.shape, generator=gen) * scale * max(std, 1e-3)
                if fraction < 1.0:
                    noise = noise * (torch.rand(x.shape, generator=gen) < fraction)
                x = x + noise
            if vocab_size is not None and is_vocab_tensor(name):
                x = _resize_rows(x, vocab_size, gen)
            new[name] = x.to(t.dtype).contiguous()
        save_file(new, str(f), metadata={"format": "pt"})
    if vocab_size is not None:
        cfg_path = out / "config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["vocab_size"] = vocab_size
        cfg_path.write_text(json.dumps(cfg, indent=2))
    return out


def _resize_rows(x: torch.Tensor, rows: int, gen: torch.Generator) -> torch.Tensor:
    if x.shape[0] >= rows:
        return x[:rows].clone()
    extra = torch.randn((rows - x.shape[0], *x.shape[1:]), generator=gen) * float(x.std())
    return torch.cat([x, extra], dim=0)


def build_lora_adapter(
    base_dir: str | Path,
    out_dir: str | Path,
    *,
    seed: int,
    rank: int = 4,
    alpha: float = 8.0,
    target_modules: Sequence[str] = ("q_proj", "v_proj"),
    scale: float = 0.05,
    use_rslora: bool = False,
) -> Path:
    """A peft-format LoRA adapter for ``base_dir`` with random (non-zero) A and B matrices.

    Writes ``adapter_config.json`` and ``adapter_model.safetensors`` with peft's key names
    (``base_model.model.<module>.lora_A.weight`` of shape [r, in], ``lora_B`` [out, r]).
    """
    base, out = Path(base_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = json.loads((base / "config.json").read_text())
    gen = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for f in _weight_files(base):
        for name, t in load_file(str(f)).items():
            if t.dim() != 2 or not name.endswith(".weight"):
                continue
            module = name[: -len(".weight")]
            if module.split(".")[-1] not in target_modules:
                continue
            out_f, in_f = t.shape
            tensors[f"base_model.model.{module}.lora_A.weight"] = (
                torch.randn((rank, in_f), generator=gen) * scale
            )
            tensors[f"base_model.model.{module}.lora_B.weight"] = (
                torch.randn((out_f, rank), generator=gen) * scale
            )
    if not tensors:
        raise ValueError(f"no 2-D weights matching target_modules={list(target_modules)} in {base}")
    save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    adapter_cfg = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": str(base),
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "target_modules": sorted(set(target_modules)),
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": use_rslora,
        "modules_to_save": None,
        "architectures": cfg.get("architectures"),
    }
    (out / "adapter_config.json").write_text(json.dumps(adapter_cfg, indent=2))
    return out
