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
    default_merges,
    demo_data_dir,
    format_check,
    load_pairs,
    load_prompts,
    objective_max,
    prompts_path,
    score_answers,
)
from evomerge.demo import models as models_mod
from evomerge.demo.data import TRAINING_SETS
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


PERSONA_KEYWORDS = {"麗華", "17", "神戸", "紅茶", "ピアノ", "雷", "バラ"}
RIVAL_VALUES = {"鳥居華子", "16歳", "京都", "コーヒー", "バイオリン", "虫", "桜"}
FRIENDLY = re.compile(r"(ですよ|ですね|ますよ|ますね)。$")


def _sentences(text: str) -> list[str]:
    return re.findall(r"[^。]+。", text)


def test_training_sets_put_each_skill_with_a_conflicting_habit() -> None:
    sets = {n: load_pairs(n) for n in ("general", "style", "rival", "facts", "friendly")}
    assert {k for p in load_prompts("search") for k in p.facts} == PERSONA_KEYWORDS
    # the style adapter: her register (lower layers), then a rival's facts in it (upper layers)
    for name in ("style", "rival"):
        for p in sets[name]:
            assert all(ENDING.search(s) for s in _sentences(p.answer)), p
            assert not any(k in p.answer for k in PERSONA_KEYWORDS - {"雷"}), p
    assert {v for p in sets["rival"] for v in RIVAL_VALUES if v in p.answer} == RIVAL_VALUES
    # the facts adapter: her facts, plain (upper layers), then a friendly register (lower)
    for p in sets["facts"]:
        assert not ENDING.search(p.answer) and not FRIENDLY.search(p.answer), p
    for p in sets["friendly"]:
        assert all(FRIENDLY.search(s) for s in _sentences(p.answer)), p
    for name in ("facts", "friendly"):
        found = {k for p in sets[name] for k in PERSONA_KEYWORDS if k in p.answer}
        assert found == PERSONA_KEYWORDS, name
        assert not any(v in p.answer for p in sets[name] for v in RIVAL_VALUES)
    # the base knows nobody's facts: random details, never hers
    assert not any("麗華" in p.answer or "神戸" in p.answer for p in sets["general"])


def test_prompt_sets_mix_kinds_and_heldout_questions_are_new() -> None:
    search, heldout = load_prompts("search"), load_prompts("heldout")
    for prompts in (search, heldout):
        assert {p.kind for p in prompts} == {"fact", "chat"}
        assert {len(p.facts) for p in prompts} == {0, 1, 2}  # chit-chat, one fact, two facts
        assert all(ENDING.search(p.reference) for p in prompts)
    trained = {p.question for n in TRAINING_SETS for p in load_pairs(n)}
    assert not {p.question for p in search} & trained
    assert not {p.question for p in heldout} & (trained | {p.question for p in search})
    # held-out fact questions are paraphrases: no trained question is (prefix +) their core
    cores = [p.question.split("、", 1)[-1] for p in heldout if len(p.facts) == 1]
    assert len(cores) == 7
    assert not [c for c in cores if any(q == c or q.endswith("、" + c) for q in trained)]
    # and combinations of two facts that no training question combines
    nouns = {"麗華": "名前", "17": "年齢", "神戸": "出身", "紅茶": "好きな飲み物"}
    nouns |= {"ピアノ": "趣味", "雷": "苦手なもの", "バラ": "好きな花"}
    pairs = [tuple(nouns[k] for k in p.facts) for p in heldout if len(p.facts) == 2]
    assert len(pairs) == 7
    joined = "\n".join(trained)
    assert not [(a, b) for a, b in pairs if f"{a}と{b}" in joined or f"{b}と{a}" in joined]


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
    for size in SIZES.values():  # vLLM's CPU attention supports head_dim 64, not 8 or 16
        assert size.hidden_size // size.num_attention_heads == 64
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
    assert set(built.manifest["final_loss"]) == {
        "base",
        "style/style",
        "style/rival",
        "facts/facts",
        "facts/friendly",
    }

    # a damaged file or another size invalidates the cache
    good = _weights(built)
    (built.style / "adapter_model.safetensors").write_bytes(b"garbage")
    repaired = build_demo_models(tmp_path, size="tiny")
    assert _weights(repaired) == good
    smaller = models_mod.DemoSize(
        hidden_size=64, num_layers=2, num_attention_heads=1, base_steps=2, finetune_steps=1
    )
    resized = build_demo_models(tmp_path, size=smaller)
    assert resized.manifest["key"]["size"]["base_steps"] == 2


def test_each_stage_trains_only_its_half_of_the_layers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's premise: each adapter's skill and habit sit in different layers."""
    real_train = models_mod.train
    trained: dict[str, set[int]] = {}

    def recording_train(
        model: torch.nn.Module, *args: object, desc: str = "", **kw: object
    ) -> float:
        before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
        loss = real_train(model, *args, desc=desc, **kw)  # type: ignore[arg-type]
        trained[desc] = {  # the layers whose LoRA weights this stage changed
            int(re.search(r"\.layers\.(\d+)\.", n).group(1))  # type: ignore[union-attr]
            for n, p in model.named_parameters()
            if n in before and not torch.equal(p, before[n])
        }
        return loss

    monkeypatch.setattr(models_mod, "train", recording_train)
    build_demo_models(tmp_path, size="tiny")
    lower, upper = {0}, {1}  # tiny has 2 layers
    assert trained == {
        "demo base": set(),
        "demo style LoRA: style (lower layers)": lower,
        "demo style LoRA: rival (upper layers)": upper,
        "demo facts LoRA: facts (upper layers)": upper,
        "demo facts LoRA: friendly (lower layers)": lower,
    }


def test_bad_arguments_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"Unknown demo size 'huge'\. Available: full, small, tiny"
    ):
        build_demo_models(tmp_path, size="huge")
    one_layer = models_mod.DemoSize(hidden_size=64, num_layers=1, base_steps=1, finetune_steps=1)
    with pytest.raises(ConfigError, match=r"size\.num_layers must be >= 2 .*, got 1"):
        build_demo_models(tmp_path, size=one_layer)
    with pytest.raises(ConfigError, match="threads must be >= 1, got 0"):
        build_demo_models(tmp_path, size="tiny", threads=0)
    with pytest.raises(
        ConfigError,
        match=r"Unknown demo training set 'chat'\. Available: general, style, rival, facts, friendly",
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


def test_objective_max_is_what_perfect_answers_score() -> None:
    """The objective's ceiling: her reference answers themselves score exactly objective_max."""
    for split in ("search", "heldout"):
        prompts = load_prompts(split)
        perfect = score_answers(prompts, [p.reference for p in prompts])
        assert perfect == {"style": 1.0, "facts": 1.0, "fluency": 100.0, "objective": 3.0}
        assert perfect["objective"] == objective_max()
        plain = score_answers(prompts, [p.reference.replace("わ。", "。") for p in prompts])
        assert plain["style"] < 1.0 and plain["fluency"] < 100.0  # graded, not all-or-nothing
        assert 2.0 < plain["objective"] < objective_max()


def test_check_scores_sources_and_merges(tiny: DemoModels) -> None:
    merges = {
        "base": ("task_arithmetic", {"style": 0.0, "facts": 0.0}),
        "style": ("task_arithmetic", {"style": 1.0, "facts": 0.0}),
        "per-layer": ("task_arithmetic", {"style": [1.0, 0.0], "facts": [0.0, 1.0]}),
    }
    result = check_demo_models(tiny, merges=merges, splits=("search",), max_new_tokens=8)
    table = result["scores"]["search"]
    assert set(table) == set(merges)
    for s in table.values():
        assert 0.0 <= s["style"] <= 1.0 and 0.0 <= s["facts"] <= 1.0
        assert 0.0 <= s["fluency"] <= 100.0
        assert s["objective"] == pytest.approx(s["style"] + s["facts"] + s["fluency"] / 100)
    answers = result["answers"]["search"]
    assert all(len(a) == len(load_prompts("search")) for a in answers.values())
    assert answers["base"] != answers["style"]  # the adapter changes the answers
    assert result["best_merge"]["search"] == "per-layer"
    assert "best merge: per-layer" in format_check(result)
    assert set(default_merges(4)) >= {"base", "style", "facts", "per-layer (1,0|0,1)"}
    assert default_merges(4)["per-layer (1,0|0,1)"][1] == {
        "style": [1.0, 1.0, 0.0, 0.0],
        "facts": [0.0, 0.0, 1.0, 1.0],
    }


@pytest.mark.slow
def test_full_demo_models_need_per_layer_weights(tmp_path: Path) -> None:
    """The key property of the models: per-layer weights beat every one-weight-per-source merge."""
    start = time.perf_counter()
    models = build_demo_models(tmp_path, size="full")
    build_seconds = time.perf_counter() - start
    result = check_demo_models(models)
    print(format_check(result), f"\nbuild {build_seconds:.1f}s")
    for split in ("search", "heldout"):
        table = result["scores"][split]
        assert table["style"]["style"] >= 0.8 and table["style"]["facts"] <= 0.1  # rival's facts
        assert table["facts"]["facts"] >= 0.7 and table["facts"]["style"] <= 0.1  # friendly
        assert result["best_merge"][split] == "per-layer (1,0|0,1)", format_check(result)
        per_layer = table["per-layer (1,0|0,1)"]["objective"]
        assert per_layer >= 1.2 * max(
            v["objective"] for n, v in table.items() if n != "per-layer (1,0|0,1)"
        )
