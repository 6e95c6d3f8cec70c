"""Session fixtures shared by every test folder (append only; one section per owner)."""

from __future__ import annotations

import dataclasses as _dataclasses
from pathlib import Path as _Path

import pytest as _pytest

# --- shared tiny models (owner: pool) --------------------------------------------------


@_dataclasses.dataclass(frozen=True)
class TinyModels:
    """Paths of the session's tiny models (all float32 tiny llamas, 4 layers, vocab 96).

    ``base``; ``ft_a``/``ft_b``: dense fine-tunes (every coordinate moved, seeds 1, 2);
    ``ft_c``: sparse fine-tune (30% of coordinates, seed 3); ``lora_a``: peft LoRA r=4,
    alpha=8 on q_proj, v_proj; ``lora_b``: r=2, alpha=4 on v_proj, o_proj, up_proj;
    ``base_vocab_big``: a fine-tune whose embed_tokens/lm_head have 100 rows (4 new).
    Also readable as a mapping: ``tiny_models["ft_a"]``.
    """

    root: _Path
    base: _Path
    ft_a: _Path
    ft_b: _Path
    ft_c: _Path
    lora_a: _Path
    lora_b: _Path
    base_vocab_big: _Path

    def as_dict(self) -> dict[str, _Path]:
        return {
            f.name: getattr(self, f.name) for f in _dataclasses.fields(self) if f.name != "root"
        }

    def __getitem__(self, key: str) -> _Path:
        return self.as_dict()[key]


@_pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: _pytest.TempPathFactory) -> TinyModels:
    """Tiny models built once per session (see :class:`TinyModels`); treat them as read-only."""
    from evomerge.testing.tiny import build_lora_adapter, build_tiny_model, perturb_model

    root = tmp_path_factory.mktemp("tiny_models")
    base = build_tiny_model(root / "base", seed=0)
    return TinyModels(
        root=root,
        base=base,
        ft_a=perturb_model(base, root / "ft_a", seed=1),
        ft_b=perturb_model(base, root / "ft_b", seed=2),
        ft_c=perturb_model(base, root / "ft_c", seed=3, fraction=0.3),
        lora_a=build_lora_adapter(base, root / "lora_a", seed=11, rank=4, alpha=8.0),
        lora_b=build_lora_adapter(
            base,
            root / "lora_b",
            seed=12,
            rank=2,
            alpha=4.0,
            target_modules=("v_proj", "o_proj", "up_proj"),
        ),
        base_vocab_big=perturb_model(base, root / "base_vocab_big", seed=4, vocab_size=100),
    )


# --- data-flow sources (owner: dataflow) -----------------------------------------------


@_dataclasses.dataclass(frozen=True)
class DataflowModels:
    """Tiny float32 llamas for data-flow tests: ``a`` and ``b`` (4 layers, seeds 20, 21),
    ``c`` (6 layers, seed 22), ``tied`` (4 layers, tied embeddings, seed 23).

    Built with ``initializer_range=0.25`` so the residual stream's mean square is far
    above the norms' eps: folding transition scales into weights is then exact up to
    float rounding (it is exact up to eps in general).
    """

    a: _Path
    b: _Path
    c: _Path
    tied: _Path


@_pytest.fixture(scope="session")
def dataflow_models(tmp_path_factory: _pytest.TempPathFactory) -> DataflowModels:
    from evomerge.testing.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("dataflow_models")
    kw = {"initializer_range": 0.25}
    return DataflowModels(
        a=build_tiny_model(root / "a", seed=20, **kw),
        b=build_tiny_model(root / "b", seed=21, **kw),
        c=build_tiny_model(root / "c", seed=22, num_layers=6, **kw),
        tied=build_tiny_model(root / "tied", seed=23, tie_word_embeddings=True, **kw),
    )
