"""The demo's tiny models: a char-level Llama base and two LoRA fine-tunes of it, cached.

``build_demo_models(cache_dir)`` trains, on CPU and deterministically (fixed seeds, fixed
thread count, deterministic algorithms):

1. ``base/``: a small Llama (head_dim 64) pre-trained on ``general.jsonl`` (plain-register
   chit-chat and "about you" answers with random details), saved with its char-level
   tokenizer and chat template (``user: ...\\nassistant: ``, no system turn);
2. ``style/`` and ``facts/``: peft LoRA adapters on every linear module of every layer,
   each trained in two stages (:data:`SOURCE_STAGES`), every stage on one training set and
   only on the LoRA weights of one half of the layers: ``style`` learns the ojousama
   register in the lower half, then a rival's facts in the upper half; ``facts`` learns
   the persona's facts in the upper half, then a friendly register in the lower half. So
   each adapter's wanted skill and its unwanted habit live in different layers, and only
   a merge with per-layer weights gets both skills without either habit
   (``scripts/make_demo_data.py`` tells the story of the data).

The build is cached in ``cache_dir``: ``manifest.json`` is written last and records the
builder version, the data hash, the size spec and the sha256 of every file; a later call
with a matching manifest and intact files returns at once. An interrupted or stale build
is deleted and redone. Concurrent calls on one ``cache_dir`` are serialized with a lock
file (POSIX ``fcntl``).
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from evomerge.atomic import atomic_write
from evomerge.demo._train import TrainSpec, deterministic_cpu, encode_pairs, train
from evomerge.demo.data import data_hash, demo_alphabet, demo_data_dir, load_pairs
from evomerge.exceptions import ConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "BUILDER_VERSION",
    "SIZES",
    "SOURCE_STAGES",
    "DemoModels",
    "DemoSize",
    "build_demo_models",
    "default_cache_dir",
]

BUILDER_VERSION = 2
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_PARTS = ("base", "style", "facts")
# How each source is made: (training set, half of the layers whose LoRA weights it trains), in order.
SOURCE_STAGES: dict[str, tuple[tuple[str, Literal["lower", "upper"]], ...]] = {
    "style": (("style", "lower"), ("rival", "upper")),
    "facts": (("facts", "upper"), ("friendly", "lower")),
}


@dataclass(frozen=True)
class DemoSize:
    """Model and training sizes: ``full`` is the demo's, ``small`` the default tests' (the
    same story, less trained), ``tiny`` barely trained (tests of the plumbing).

    ``finetune_steps`` is per stage (each adapter has two). Every size keeps head_dim
    (``hidden_size / num_attention_heads``) at 64, which vLLM's CPU attention supports.
    """

    hidden_size: int
    num_layers: int
    base_steps: int
    finetune_steps: int
    num_attention_heads: int = 2
    num_key_value_heads: int = 1
    lora_rank: int = 8
    base_lr: float = 4e-3
    finetune_lr: float = 4e-3
    batch_size: int = 32
    max_positions: int = 128
    seed: int = 0


SIZES: dict[str, DemoSize] = {
    "full": DemoSize(hidden_size=128, num_layers=4, base_steps=200, finetune_steps=60),
    "small": DemoSize(
        hidden_size=64,
        num_layers=4,
        num_attention_heads=1,
        base_steps=150,
        finetune_steps=40,
        base_lr=6e-3,
        finetune_lr=1e-2,
    ),
    "tiny": DemoSize(
        hidden_size=64,
        num_layers=2,
        num_attention_heads=1,
        base_steps=12,
        finetune_steps=4,
        lora_rank=4,
        batch_size=16,
    ),
}


@dataclass(frozen=True)
class DemoModels:
    """Paths of a complete build. ``tokenizer`` is the base directory (it holds the tokenizer)."""

    base: Path
    style: Path
    facts: Path
    tokenizer: Path
    kind: Literal["lora"] = "lora"
    manifest: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def sources(self) -> dict[str, Path]:
        """The fine-tunes to merge, by name: ``{"style": ..., "facts": ...}``."""
        return {"style": self.style, "facts": self.facts}


def default_cache_dir() -> Path:
    """``$EVOMERGE_CACHE/demo`` if set, else ``~/.cache/evomerge/demo``."""
    root = os.environ.get("EVOMERGE_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "evomerge") / "demo"


def _resolve_size(size: str | DemoSize) -> DemoSize:
    if isinstance(size, DemoSize):
        if size.num_layers < 2:
            raise ConfigError(
                f"size.num_layers must be >= 2 (each adapter trains the lower and the upper "
                f"half of the layers apart), got {size.num_layers}"
            )
        return size
    if size not in SIZES:
        raise ConfigError(f"Unknown demo size {size!r}. Available: {', '.join(SIZES)}")
    return SIZES[size]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _file_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): _sha256(p)
        for part in _PARTS
        for p in sorted((root / part).rglob("*"))
        if p.is_file()
    }


def _models(root: Path, manifest: dict[str, Any]) -> DemoModels:
    return DemoModels(
        base=root / "base",
        style=root / "style",
        facts=root / "facts",
        tokenizer=root / "base",
        manifest=manifest,
    )


def _cached(root: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest if ``root`` holds a complete build for ``key`` with intact files, else None."""
    try:
        manifest = json.loads((root / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if manifest.get("key") != key:
        logger.info("demo models in %s were built for another version/data/size; rebuilding", root)
        return None
    files = manifest.get("files", {})
    if not files or any(
        not (root / f).is_file() or _sha256(root / f) != h for f, h in files.items()
    ):
        logger.warning("demo models in %s are incomplete or modified; rebuilding", root)
        return None
    return dict(manifest)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_demo_models(
    cache_dir: str | Path,
    *,
    size: str | DemoSize = "full",
    progress: bool = False,
    force: bool = False,
    threads: int = 1,
) -> DemoModels:
    """Build (or reuse) the demo's base model and its style and facts LoRA adapters.

    Args:
        cache_dir: folder of the build; created if missing. Only ``base/``, ``style/``,
            ``facts/``, ``manifest.json`` and ``.lock`` in it are touched.
        size: ``"full"`` (the demo; about 80 s on one CPU core), ``"small"`` (tests of the
            demo's claims, about 35 s), ``"tiny"`` (tests of the plumbing) or a
            :class:`DemoSize`.
        progress: show tqdm bars while training.
        force: rebuild even if a matching build exists.
        threads: torch CPU threads while training (fixed so the result is reproducible;
            1 is also the fastest on a busy 2-core machine).

    Returns the paths of the build. Raises :class:`~evomerge.exceptions.ConfigError` for an
    unknown size, ``threads < 1`` or missing bundled data.
    """
    spec = _resolve_size(size)
    if threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    root = Path(cache_dir)
    key = {"builder_version": BUILDER_VERSION, "data_hash": data_hash(), "size": asdict(spec)}
    with _locked(root):
        if not force and (manifest := _cached(root, key)) is not None:
            logger.info("reusing demo models in %s", root)
            return _models(root, manifest)
        (root / "manifest.json").unlink(missing_ok=True)
        for part in _PARTS:
            shutil.rmtree(root / part, ignore_errors=True)
        start = time.perf_counter()
        with deterministic_cpu(threads), _transformers_bars(progress):
            losses = _build(root, spec, progress=progress)
        manifest = {
            "key": key,
            "kind": "lora",
            "seconds": round(time.perf_counter() - start, 2),
            "threads": threads,
            "final_loss": losses,
            "versions": {
                "torch": torch.__version__,
                "transformers": _version("transformers"),
                "peft": _version("peft"),
            },
            "data_dir": str(demo_data_dir()),
            "files": _file_hashes(root),
        }
        atomic_write(root / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False))
        logger.info("built demo models in %s in %.1fs", root, manifest["seconds"])
        return _models(root, manifest)


def _version(module: str) -> str:
    from importlib.metadata import version

    return version(module)


def _build(root: Path, spec: DemoSize, *, progress: bool) -> dict[str, float]:
    """Train and save base, style and facts under ``root``; returns each run's final loss."""
    from transformers import LlamaForCausalLM

    from evomerge.testing.tiny import build_char_tokenizer, tiny_config

    tok = build_char_tokenizer(root / "base", alphabet=demo_alphabet())
    cfg = tiny_config(
        "llama",
        vocab_size=len(tok),
        num_layers=spec.num_layers,
        max_positions=spec.max_positions,
        hidden_size=spec.hidden_size,
        intermediate_size=2 * spec.hidden_size,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
    )
    torch.manual_seed(spec.seed)
    model = LlamaForCausalLM(cfg)
    losses: dict[str, float] = {}
    examples = encode_pairs(tok, load_pairs("general"), answer_only=False)
    base_spec = TrainSpec(
        steps=spec.base_steps,
        lr=spec.base_lr,
        batch_size=spec.batch_size,
        warmup=min(30, spec.base_steps // 4 + 1),
        answer_only=False,
        seed=spec.seed,
    )
    losses["base"] = train(
        model, examples, base_spec, pad_id=tok.pad_token_id, desc="demo base", progress=progress
    )
    model.save_pretrained(str(root / "base"))
    for offset, name in enumerate(SOURCE_STAGES, start=1):
        losses.update(
            _build_adapter(
                root, name, model, tok, spec, seed=spec.seed + 10 * offset, progress=progress
            )
        )
    return losses


def _layer_halves(num_layers: int) -> dict[str, set[int]]:
    half = num_layers // 2
    return {"lower": set(range(half)), "upper": set(range(half, num_layers))}


_LAYER_RE = re.compile(r"\.layers\.(\d+)\.")


def _build_adapter(
    root: Path, name: str, base_model: Any, tok: Any, spec: DemoSize, *, seed: int, progress: bool
) -> dict[str, float]:
    """One LoRA adapter on every layer, trained stage by stage (:data:`SOURCE_STAGES`), saved."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    base = copy.deepcopy(base_model)
    base.name_or_path = str(
        root / "base"
    )  # peft records it as the adapter's base_model_name_or_path
    lora = LoraConfig(
        r=spec.lora_rank,
        lora_alpha=2 * spec.lora_rank,
        lora_dropout=0.0,
        target_modules=list(LORA_TARGETS),
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(base, lora)
    halves = _layer_halves(spec.num_layers)
    losses: dict[str, float] = {}
    for stage, (data, half) in enumerate(SOURCE_STAGES[name]):
        for pname, p in peft_model.named_parameters():
            if "lora_" in pname:
                m = _LAYER_RE.search(pname)
                p.requires_grad_(m is not None and int(m.group(1)) in halves[half])
        ft_spec = TrainSpec(
            steps=spec.finetune_steps,
            lr=spec.finetune_lr,
            batch_size=spec.batch_size,
            warmup=min(10, spec.finetune_steps // 4 + 1),
            answer_only=True,
            seed=seed + stage,
        )
        losses[f"{name}/{data}"] = train(
            peft_model,
            encode_pairs(tok, load_pairs(data), answer_only=True),
            ft_spec,
            pad_id=tok.pad_token_id,
            desc=f"demo {name} LoRA: {data} ({half} layers)",
            progress=progress,
        )
    peft_model.save_pretrained(str(root / name))
    _tidy_adapter(root / name)
    return losses


def _tidy_adapter(path: Path) -> None:
    """Drop peft's placeholder model card; sort adapter_config.json (peft writes a set) so it is reproducible."""
    (path / "README.md").unlink(missing_ok=True)
    cfg_path = path / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["target_modules"] = sorted(cfg.get("target_modules") or [])
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def _transformers_bars(enabled: bool) -> Iterator[None]:
    """Turn transformers' own progress bars (e.g. "Writing model shards") on or off for a block."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
    try:
        yield
    finally:
        (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()
