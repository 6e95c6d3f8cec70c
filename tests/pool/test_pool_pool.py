"""ModelPool: architecture checks, vocab crops (as mergekit), accessors, pickling."""

from __future__ import annotations

import logging
import pickle
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from evomerge.exceptions import ArchitectureMismatchError, CheckpointError, ConfigError
from evomerge.pool import ModelPool, VocabCrop
from evomerge.testing.tiny import build_tiny_model, perturb_model

EMBED, HEAD = "model.embed_tokens.weight", "lm_head.weight"


def _read_all(model_dir: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def _rewrite(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    f = dst / "model.safetensors"
    tensors = load_file(str(f))
    edit(tensors)
    save_file(tensors, str(f), metadata={"format": "pt"})
    return dst


def test_full_sources_read_exactly(tiny_models) -> None:
    pool = ModelPool.open(tiny_models.base, [tiny_models.ft_a, tiny_models.ft_c])
    assert pool.source_names == ["ft_a", "ft_c"] and pool.num_sources == 2
    assert pool.num_layers == 4 and pool.vocab_crops == []
    assert not pool.is_lora(0) and pool.model_ref(1) == str(tiny_models.ft_c)
    base, ft_c = _read_all(tiny_models.base), _read_all(tiny_models.ft_c)
    assert set(pool.tensor_names) == set(base)
    for name in pool.tensor_names:
        assert torch.equal(pool.base_tensor(name), base[name])
        assert torch.equal(pool.source_tensor(1, name), ft_c[name])
        assert torch.equal(pool.task_vector(1, name), ft_c[name] - base[name])
    # ft_c is sparse: most coordinates of its task vector are exactly zero.
    tv = pool.task_vector(1, "model.layers.2.mlp.up_proj.weight")
    assert 0.5 < (tv == 0).float().mean() < 0.9


def test_info_reports_shape_dtype_layer_module(tiny_models) -> None:
    pool = ModelPool.open(tiny_models.base, [tiny_models.ft_a])
    info = pool.info("model.layers.3.self_attn.k_proj.weight")
    assert (info.layer, info.module, info.dtype) == (3, "k", torch.float32)
    assert info.shape == (16, 32) and info.numel == 16 * 32
    with pytest.raises(KeyError, match="no tensor 'nope'"):
        pool.info("nope")
    with pytest.raises(IndexError, match="has 1 source"):
        pool.task_vector(1, info.name)


def test_different_vocab_sizes_are_cropped_to_the_smallest_and_reported(
    tiny_models, caplog
) -> None:
    with caplog.at_level(logging.WARNING, logger="evomerge.pool"):
        pool = ModelPool.open(tiny_models.base, [tiny_models.ft_a, tiny_models.base_vocab_big])
    assert pool.vocab_crops == [
        VocabCrop(
            tensor=HEAD,
            models=("base", "ft_a", "base_vocab_big"),
            sizes=(96, 96, 100),
            cropped_to=96,
        ),
        VocabCrop(
            tensor=EMBED,
            models=("base", "ft_a", "base_vocab_big"),
            sizes=(96, 96, 100),
            cropped_to=96,
        ),
    ]
    assert any(
        "cropped to 96" in r.getMessage() and EMBED in r.getMessage() for r in caplog.records
    )
    big = _read_all(tiny_models.base_vocab_big)
    base = _read_all(tiny_models.base)
    for name in (EMBED, HEAD):
        assert pool.info(name).shape == (96, 32)
        assert torch.equal(pool.source_tensor(1, name), big[name][:96])
        assert torch.equal(pool.task_vector(1, name), big[name][:96] - base[name])
    assert pool.nbytes(torch.bfloat16) == 2 * sum(t.numel() for t in base.values())


def test_a_bigger_base_is_cropped_too(tiny_models) -> None:
    pool = ModelPool.open(tiny_models.base_vocab_big, [tiny_models.ft_a])
    assert [c.cropped_to for c in pool.vocab_crops] == [96, 96]
    assert pool.base_tensor(EMBED).shape == (96, 32)


def test_vocab_crop_matches_mergekit(tiny_models, tmp_path: Path) -> None:
    """mergekit 0.1.5 truncates to the smallest vocabulary over all inputs (base included)."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    big, small = tiny_models.base_vocab_big, tiny_models.ft_a
    config = MergeConfiguration.model_validate(
        yaml.safe_load(
            f"""
            merge_method: linear
            base_model: {big}
            dtype: float32
            models:
              - {{model: {big}, parameters: {{weight: 0.25}}}}
              - {{model: {small}, parameters: {{weight: 0.75}}}}
            """
        )
    )
    out = tmp_path / "mk"
    run_merge(
        config,
        str(out),
        MergeOptions(unsafe_truncate_embeddings=True, quiet=True, copy_tokenizer=False),
    )
    merged = _read_all(out)
    pool = ModelPool.open(big, [small])
    for name in (EMBED, HEAD):
        ours = 0.25 * pool.base_tensor(name) + 0.75 * pool.source_tensor(0, name)
        assert merged[name].shape == pool.info(name).shape
        torch.testing.assert_close(merged[name], ours, atol=1e-6, rtol=0)


def test_shape_mismatch_names_the_first_differing_tensor(tiny_models, tmp_path: Path) -> None:
    other = build_tiny_model(tmp_path / "wide", seed=0, intermediate_size=48, tokenizer=False)
    base_ck, other_ck = _read_all(tiny_models.base), _read_all(other)
    pool_order = ModelPool.open(tiny_models.base, [tiny_models.ft_a]).tensor_names
    first = next(n for n in pool_order if base_ck[n].shape != other_ck[n].shape)
    with pytest.raises(ArchitectureMismatchError) as err:
        ModelPool.open(tiny_models.base, [tiny_models.ft_a, other], names=["a", "wide"])
    msg = str(err.value)
    assert f"tensor {first!r}" in msg
    assert str(tuple(base_ck[first].shape)) in msg and str(tuple(other_ck[first].shape)) in msg
    assert "'wide'" in msg and str(other) in msg and str(tiny_models.base) in msg


def test_vocab_tensor_with_other_dims_differing_is_a_mismatch(tiny_models, tmp_path: Path) -> None:
    def widen(t: dict[str, torch.Tensor]) -> None:
        t[EMBED] = torch.zeros(96, 40)

    bad = _rewrite(tiny_models.ft_a, tmp_path / "bad", widen)
    with pytest.raises(
        ArchitectureMismatchError,
        match=r"'model\.embed_tokens\.weight' has shape \(96, 32\) in base .* but \(96, 40\)",
    ):
        ModelPool.open(tiny_models.base, [bad])


def test_missing_and_extra_tensors_are_named(tiny_models, tmp_path: Path) -> None:
    gone = "model.layers.2.mlp.gate_proj.weight"
    missing = _rewrite(tiny_models.ft_a, tmp_path / "missing", lambda t: t.pop(gone))
    with pytest.raises(
        ArchitectureMismatchError, match=rf"'missing' .* lacks tensor '{gone}' that base"
    ):
        ModelPool.open(tiny_models.base, [missing])
    extra = _rewrite(
        tiny_models.ft_a,
        tmp_path / "extra",
        lambda t: t.update({"model.extra.weight": torch.ones(3)}),
    )
    with pytest.raises(
        ArchitectureMismatchError, match=r"'extra' .* has tensor 'model\.extra\.weight' that base"
    ):
        ModelPool.open(tiny_models.base, [extra])


def test_tied_models_without_lm_head_are_fine_but_mixing_ties_is_not(
    tiny_models, tmp_path: Path
) -> None:
    tied = build_tiny_model(tmp_path / "tied", seed=0, tie_word_embeddings=True, tokenizer=False)
    tied_ft = perturb_model(tied, tmp_path / "tied_ft", seed=1)
    pool = ModelPool.open(tied, [tied_ft])
    assert HEAD not in pool.tensor_names and EMBED in pool.tensor_names
    with pytest.raises(
        ArchitectureMismatchError, match=r"lacks tensor 'lm_head\.weight'.*ties lm_head"
    ):
        ModelPool.open(tiny_models.base, [tied_ft])


def test_config_layer_count_is_cross_checked(tiny_models, tmp_path: Path) -> None:
    import json

    liar = shutil.copytree(tiny_models.base, tmp_path / "liar")
    cfg = json.loads((liar / "config.json").read_text())
    cfg["num_hidden_layers"] = 6
    (liar / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        CheckpointError, match=r"declares 6 layers but the tensors cover layers 0\.\.3"
    ):
        ModelPool.open(liar, [tiny_models.ft_a])


def test_mixed_dtypes_are_compared_in_float32(tmp_path: Path) -> None:
    base = build_tiny_model(
        tmp_path / "bf16", seed=0, dtype=torch.bfloat16, num_layers=2, tokenizer=False
    )
    ft = build_tiny_model(
        tmp_path / "fp16", seed=1, dtype=torch.float16, num_layers=2, tokenizer=False
    )
    pool = ModelPool.open(base, [ft])
    b, f = _read_all(base), _read_all(ft)
    for name in pool.tensor_names:
        assert pool.info(name).dtype == torch.bfloat16
        assert torch.equal(pool.task_vector(0, name), f[name].float() - b[name].float())
        half = pool.task_vector(0, name, dtype=torch.float16)
        assert half.dtype == torch.float16 and torch.equal(
            half, (f[name].float() - b[name].float()).half()
        )


def test_source_names_default_unique_and_validated(tiny_models, tmp_path: Path) -> None:
    twin = shutil.copytree(tiny_models.ft_b, tmp_path / "x" / "ft_a")
    pool = ModelPool.open(tiny_models.base, [tiny_models.ft_a, twin, tiny_models.lora_a])
    assert pool.source_names == ["ft_a", "ft_a-2", "lora_a"]
    with pytest.raises(ConfigError, match="got 1 name"):
        ModelPool.open(tiny_models.base, [tiny_models.ft_a, twin], names=["one"])
    with pytest.raises(ConfigError, match="unique"):
        ModelPool.open(tiny_models.base, [tiny_models.ft_a, twin], names=["same", "same"])


def test_missing_source_directory_is_a_checkpoint_error(tiny_models, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        ModelPool.open(tiny_models.base, [tmp_path / "nowhere"])


def test_pool_pickles_cheaply_and_reopens_handles(tiny_models) -> None:
    import ray.cloudpickle

    pool = ModelPool.open(tiny_models.base, [tiny_models.ft_a, tiny_models.lora_b])
    name = "model.layers.1.self_attn.o_proj.weight"
    expected = [pool.task_vector(i, name) for i in range(2)]  # opens the file handles
    for dumps, loads in (
        (pickle.dumps, pickle.loads),
        (ray.cloudpickle.dumps, ray.cloudpickle.loads),
    ):
        blob = dumps(pool)
        assert len(blob) < 50_000  # metadata and paths, never tensors
        clone = loads(blob)
        assert clone.source_names == pool.source_names and clone.vocab_crops == pool.vocab_crops
        for i in range(2):
            assert torch.equal(clone.task_vector(i, name), expected[i])


def test_concurrent_reads_agree_with_sequential_reads(tiny_models) -> None:
    pool = ModelPool.open(tiny_models.base, [tiny_models.ft_b, tiny_models.lora_a])
    jobs = [(i, n) for i in range(2) for n in pool.tensor_names]
    sequential = [pool.task_vector(i, n) for i, n in jobs]
    fresh = pickle.loads(pickle.dumps(pool))  # handles not yet open: threads race to open them
    with ThreadPoolExecutor(max_workers=4) as ex:
        concurrent = list(ex.map(lambda job: fresh.task_vector(*job), jobs))
    assert all(torch.equal(a, b) for a, b in zip(sequential, concurrent, strict=True))


@pytest.mark.gpu
def test_tensors_on_cuda_equal_cpu(tiny_models) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pool = ModelPool.open(
        tiny_models.base, [tiny_models.ft_a, tiny_models.lora_a, tiny_models.base_vocab_big]
    )
    for name in pool.tensor_names:
        for i in range(pool.num_sources):
            gpu = pool.task_vector(i, name, device="cuda", dtype=torch.bfloat16)
            assert gpu.device.type == "cuda" and gpu.dtype == torch.bfloat16
            cpu = pool.task_vector(i, name)
            torch.testing.assert_close(gpu.float().cpu(), cpu, atol=2e-2, rtol=1e-2)
        assert pool.base_tensor(name, device="cuda").device.type == "cuda"
