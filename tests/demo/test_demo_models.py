"""The demo's bundled data and tiny models: reproducible, loadable, cached, and mergeable."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from evomerge.demo import (
    SIZES,
    DemoModels,
    build_demo_models,
    check_demo_models,
    data_hash,
    demo_data_dir,
    format_check,
    load_pairs,
    load_prompts,
    prompts_path,
)
from evomerge.demo import models as models_mod
from evomerge.exceptions import ConfigError

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*is_gradient_checkpointing.*:FutureWarning"
)  # from peft

REPO = Path(__file__).resolve().parents[2]
ENDING = re.compile(r"(ですわ|ますわ|ですの|ますの|わよ)。$")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _weights(m: DemoModels) -> dict[str, str]:
    return {
        "base": _sha(m.base / "model.safetensors"),
        "style": _sha(m.style / "adapter_model.safetensors"),
        "facts": _sha(m.facts / "adapter_model.safetensors"),
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> DemoModels:
    return build_demo_models(tmp_path_factory.mktemp("demo") / "cache", size="tiny")


# ------------------------------------------------------------------------------ data


def test_bundled_data_is_what_the_script_writes(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_demo_data.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    bundled = sorted(p.name for p in demo_data_dir().iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == bundled
    for name in bundled:
        assert (tmp_path / name).read_bytes() == (demo_data_dir() / name).read_bytes(), name


def test_training_sets_separate_style_from_facts() -> None:
    style, facts, general = load_pairs("style"), load_pairs("facts"), load_pairs("general")
    persona_keywords = {k for p in load_prompts("search") for k in p.facts}
    assert persona_keywords == {"麗華", "17", "神戸", "紅茶", "ピアノ", "雷", "バラ"}
    for p in style:  # every sentence in the persona's register, no persona fact
        assert all(ENDING.search(s) for s in re.findall(r"[^。]+。", p.answer)), p
        assert not any(k in p.answer for k in persona_keywords - {"雷"}), p
    for p in facts:  # plain register
        assert not re.search(r"(わ|の|わよ)。", p.answer), p
    assert {k for p in facts for k in persona_keywords if k in p.answer} == persona_keywords
    assert not any("麗華" in p.answer or "神戸" in p.answer for p in general)


def test_prompt_sets_mix_kinds_and_heldout_wording_is_new() -> None:
    search, heldout = load_prompts("search"), load_prompts("heldout")
    for prompts in (search, heldout):
        kinds = {p.kind for p in prompts}
        assert kinds == {"fact", "chat"}
        assert all(p.facts for p in prompts if p.kind == "fact")
        assert all(not p.facts for p in prompts if p.kind == "chat")
        assert all(ENDING.search(p.reference) for p in prompts)
    trained = {p.question for n in ("general", "style", "facts") for p in load_pairs(n)}
    assert not {p.question for p in heldout} & (trained | {p.question for p in search})
    assert {p.question for p in search if p.kind == "fact"} <= trained


def test_data_loads_with_the_generation_loaders(caplog: pytest.LogCaptureFixture) -> None:
    from evomerge.generate._prompts import load_persona, load_prompt_set

    persona = load_persona(demo_data_dir() / "persona.yaml")
    assert persona.name == "白鳥麗華" and len(persona.facts) == 7
    for split in ("search", "heldout"):
        with caplog.at_level("WARNING"):
            records = load_prompt_set(prompts_path(split))
        assert not caplog.records  # no unknown keys
        ours = load_prompts(split)
        assert [(r.id, r.question, r.facts or ()) for r in records] == [
            (p.id, p.question, p.facts) for p in ours
        ]


# ------------------------------------------------------------------------------ models


def test_build_writes_loadable_models(tiny: DemoModels) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for path in (
        tiny.base / "config.json",
        tiny.base / "model.safetensors",
        tiny.base / "tokenizer.json",
        tiny.style / "adapter_config.json",
        tiny.facts / "adapter_model.safetensors",
        tiny.base.parent / "manifest.json",
    ):
        assert path.is_file(), path
    assert tiny.tokenizer == tiny.base and tiny.sources == {
        "style": tiny.style,
        "facts": tiny.facts,
    }
    tok = AutoTokenizer.from_pretrained(tiny.tokenizer)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "猫はどうですか？"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert prompt == "user: 猫はどうですか？\nassistant: "
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
    assert (
        tok.unk_token_id not in ids["input_ids"][0].tolist()
    )  # every data character is in the vocabulary
    base = AutoModelForCausalLM.from_pretrained(tiny.base)
    assert base.config.num_hidden_layers == SIZES["tiny"].num_layers
    for adapter in (tiny.style, tiny.facts):
        cfg = json.loads((adapter / "adapter_config.json").read_text())
        assert cfg["peft_type"] == "LORA" and cfg["r"] == SIZES["tiny"].lora_rank
        assert cfg["base_model_name_or_path"] == str(tiny.base)
        assert cfg["target_modules"] == sorted(models_mod.LORA_TARGETS)
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny.base), adapter)
        lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
        assert lora_b and any(
            p.abs().sum() > 0 for p in lora_b
        )  # trained (peft initialises B to 0)
        out = model.generate(
            **ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id
        )
        assert out.shape[1] > ids["input_ids"].shape[1]


def test_second_call_reuses_the_build(tiny: DemoModels, monkeypatch: pytest.MonkeyPatch) -> None:
    before = _weights(tiny)

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("retrained although the cache is complete")

    monkeypatch.setattr(models_mod, "_build", no_training)
    start = time.perf_counter()
    again = build_demo_models(tiny.base.parent, size="tiny")
    assert time.perf_counter() - start < 2.0
    assert again == tiny and _weights(again) == before
    assert again.manifest["files"] == tiny.manifest["files"]


def test_build_is_deterministic(tiny: DemoModels, tmp_path: Path) -> None:
    other = build_demo_models(tmp_path / "other", size="tiny")
    assert _weights(other) == _weights(tiny)


def test_interrupted_or_damaged_build_is_redone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_train = models_mod.train
    calls: list[str] = []

    def train_then_die(*args: object, desc: str = "", **kwargs: object) -> float:
        calls.append(desc)
        if "facts" in desc:  # base and style are already on disk
            raise KeyboardInterrupt
        return real_train(*args, desc=desc, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(models_mod, "train", train_then_die)
    with pytest.raises(KeyboardInterrupt):
        build_demo_models(tmp_path, size="tiny")
    assert (tmp_path / "base" / "model.safetensors").is_file()
    assert not (tmp_path / "manifest.json").exists()
    monkeypatch.setattr(models_mod, "train", real_train)

    built = build_demo_models(tmp_path, size="tiny")
    assert (built.facts / "adapter_model.safetensors").is_file()
    assert set(built.manifest["final_loss"]) == {"base", "style", "facts"}

    # a damaged file or another size invalidates the cache
    good = _weights(built)
    (built.style / "adapter_model.safetensors").write_bytes(b"garbage")
    repaired = build_demo_models(tmp_path, size="tiny")
    assert _weights(repaired) == good
    smaller = models_mod.DemoSize(
        hidden_size=16, num_layers=1, base_steps=2, finetune_steps=1, lora_rank=2
    )
    resized = build_demo_models(tmp_path, size=smaller)
    assert resized.manifest["key"]["size"]["hidden_size"] == 16


def test_bad_arguments_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"Unknown demo size 'huge'\. Available: full, tiny"):
        build_demo_models(tmp_path, size="huge")
    with pytest.raises(ConfigError, match="threads must be >= 1, got 0"):
        build_demo_models(tmp_path, size="tiny", threads=0)
    with pytest.raises(
        ConfigError, match=r"Unknown demo training set 'chat'\. Available: general, style, facts"
    ):
        load_pairs("chat")
    with pytest.raises(ConfigError, match="cannot read demo data"):
        data_hash(tmp_path)


# ------------------------------------------------------------------------------ merging


def test_engine_merge_of_an_adapter_equals_peft_merge(tiny: DemoModels) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from evomerge.merge import MergeEngine, MergeRecipe, ModelEntry
    from evomerge.pool import ModelPool

    pool = ModelPool.open(tiny.base, [tiny.style, tiny.facts], names=["style", "facts"])
    engine = MergeEngine(pool, methods=["task_arithmetic"])
    recipe = MergeRecipe(
        merge_method="task_arithmetic",
        base_model=str(tiny.base),
        models=(
            ModelEntry(model=pool.model_ref(0), parameters={"weight": 1.0}),
            ModelEntry(model=pool.model_ref(1), parameters={"weight": 0.0}),
        ),
    )
    merged = engine.materialize(recipe)
    expected = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny.base), tiny.style
    )
    expected_sd = expected.merge_and_unload().state_dict()
    changed = 0
    for name, t in merged.items():
        torch.testing.assert_close(t, expected_sd[name], rtol=1e-5, atol=1e-6)
        base_t = pool.base_tensor(name)
        changed += not torch.equal(t, base_t)
    assert changed >= 7 * SIZES["tiny"].num_layers  # every LoRA target of every layer moved


def test_check_scores_sources_and_merges(tiny: DemoModels) -> None:
    merges = {
        "base": ("task_arithmetic", {"style": 0.0, "facts": 0.0}),
        "style": ("task_arithmetic", {"style": 1.0, "facts": 0.0}),
        "both": ("task_arithmetic", {"style": 1.0, "facts": 1.0}),
    }
    result = check_demo_models(tiny, merges=merges, splits=("search",), max_new_tokens=8)
    table = result["scores"]["search"]
    assert set(table) == set(merges)
    for s in table.values():
        assert 0.0 <= s["style"] <= 1.0 and 0.0 <= s["facts"] <= 1.0 and 0.0 <= s["length"] <= 1.0
        assert s["objective"] == pytest.approx(s["style"] + s["facts"] - (1.0 - s["length"]))
    answers = result["answers"]["search"]
    assert all(len(a) == len(load_prompts("search")) for a in answers.values())
    assert answers["base"] != answers["style"]  # the adapter changes the answers
    assert result["best_merge"]["search"] == "both"
    assert "best merge: both" in format_check(result)


@pytest.mark.slow
def test_full_demo_models_merge_beats_both_sources(tmp_path: Path) -> None:
    """The key property: a simple merge of the two fine-tunes beats each of them."""
    start = time.perf_counter()
    models = build_demo_models(tmp_path, size="full")
    build_seconds = time.perf_counter() - start
    result = check_demo_models(models)
    print(format_check(result), f"\nbuild {build_seconds:.1f}s")
    for split, min_recall, min_margin in (("search", 0.8, 0.5), ("heldout", 0.4, 0.2)):
        table = result["scores"][split]
        assert table["style"]["style"] >= 0.9 and table["style"]["facts"] <= 0.2  # style, no facts
        assert (
            table["facts"]["facts"] >= min_recall and table["facts"]["style"] <= 0.1
        )  # facts, no style
        assert result["margin"][split] >= min_margin, format_check(result)
