#!/usr/bin/env python3
"""Generate the bundled lm-evaluation-harness tasks' data (evomerge/data/lm_eval_tasks/).

Nothing is downloaded; the same script always writes byte-identical files::

    python scripts/make_lm_eval_tasks.py                  # writes evomerge/data/lm_eval_tasks/
    python scripts/make_lm_eval_tasks.py --out /tmp/tasks # elsewhere (a test compares the two)

The tasks are built on the demo's persona and vocabulary (a frozen copy of the tables of
``scripts/make_demo_data.py``), so the demo's tiny models can be scored on them:

- ``persona_facts_mc``: multiple choice on the persona's facts. The context is the demo's
  chat format up to the fact (``user: 出身はどこですか？\\nassistant: わたしは``), the
  choices are her value and three values other people have in the demo's corpus.
- ``persona_register``: a translation-style generation task: a plain です/ます sentence
  rewritten in the persona's register (わたし -> わたくし, です。-> ですわ。, ます。->
  ますわ。), scored by chrF and BLEU against the reference.
- ``general_chat_mc``: multiple choice on the demo corpus's general chit-chat ("猫は" ->
  "かわいいです。" rather than an adjective no dialogue gives cats): the general ability
  that a continually pre-trained descendant may forget.

JSONL files are UTF-8, one object per line, ``ensure_ascii=False``; the task YAMLs live
next to them and are written by hand.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
from pathlib import Path
from types import ModuleType

SEED = 20240612
REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "evomerge" / "data" / "lm_eval_tasks"
N_CHOICES = 4
N_REGISTER_TRAIN = 400
N_REGISTER_TEST = 24

# Per fact: the answer's text before and after the value (the demo's first answer shapes).
FACT_FRAMES = {
    "name": ("わたしの名前は", "です。"),
    "age": ("わたしは", "歳です。"),
    "hometown": ("わたしは", "の出身です。"),
    "drink": ("好きな飲み物は", "です。"),
    "hobby": ("わたしの趣味は", "です。"),
    "dislike": ("わたしは", "が苦手です。"),
    "flower": ("好きな花は", "です。"),
}


def _demo_tables() -> ModuleType:
    """The demo data script as a module (its persona, facts and topic tables)."""
    path = Path(__file__).with_name("lm_eval_task_tables.py")
    spec = importlib.util.spec_from_file_location("lm_eval_task_tables", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _shuffled_choices(rng: random.Random, gold: str, others: list[str]) -> tuple[list[str], int]:
    choices = [gold, *rng.sample(others, N_CHOICES - 1)]
    rng.shuffle(choices)
    return choices, choices.index(gold)


def make_facts_mc(demo: ModuleType, rng: random.Random) -> dict[str, list[dict[str, object]]]:
    """Test: two trained and two held-out question cores per fact; train: the other cores."""
    splits: dict[str, list[dict[str, object]]] = {"train": [], "test": []}
    for fact, (before, after) in FACT_FRAMES.items():
        spec = demo.FACTS[fact]
        value = demo.PERSONA_VALUES[fact]
        others = [v for v in demo.RANDOM_VALUES[fact] if v != value]
        cores = {"test": spec["train"][:2] + spec["heldout"], "train": spec["train"][2:]}
        for split, chosen in cores.items():
            for core in chosen:
                choices, gold = _shuffled_choices(rng, value, others)
                splits[split].append(
                    {
                        "fact": fact,
                        "question": demo._q("", core),
                        "prefix": before,
                        "choices": [c + after for c in choices],
                        "answer": gold,
                    }
                )
    return splits


def to_persona_register(plain: str) -> str:
    """The deterministic register rewrite the translation task asks for."""
    return (
        plain.replace("わたし", "わたくし")
        .replace("です。", "ですわ。")
        .replace("ます。", "ますわ。")
    )


def make_register(demo: ModuleType, rng: random.Random) -> dict[str, list[dict[str, object]]]:
    """Plain sentences (chit-chat answers and "about you" answers with random details)."""
    seen: set[str] = set()
    rows: list[dict[str, object]] = []
    while len(rows) < N_REGISTER_TRAIN + N_REGISTER_TEST:
        if rng.random() < 0.5:
            plain = demo.chat_answer(rng, rng.choice(list(demo.TOPICS)))
        else:
            values = {k: rng.choice(v) for k, v in demo.RANDOM_VALUES.items()}
            plain = demo.fact_answer(rng, rng.choice(list(demo.FACTS)), values)
        if plain in seen:
            continue
        seen.add(plain)
        rows.append({"source": plain, "target": to_persona_register(plain)})
    return {"test": rows[:N_REGISTER_TEST], "train": rows[N_REGISTER_TEST:]}


def make_general_mc(demo: ModuleType, rng: random.Random) -> dict[str, list[dict[str, object]]]:
    """One question per topic: its first adjective against adjectives no dialogue gives it."""
    every = sorted({a for adjs, _ in demo.TOPICS.values() for a in adjs})
    rows: list[dict[str, object]] = []
    for topic, (adjs, _) in demo.TOPICS.items():
        others = [a for a in every if a not in adjs]
        choices, gold = _shuffled_choices(rng, adjs[0], others)
        rows.append(
            {
                "topic": topic,
                "question": f"{topic}はどんなものですか？",
                "prefix": f"{topic}は",
                "choices": [c + "です。" for c in choices],
                "answer": gold,
            }
        )
    return {"test": rows}


def _write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    path.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    args = ap.parse_args(argv)
    demo = _demo_tables()
    rng = random.Random(SEED)
    args.out.mkdir(parents=True, exist_ok=True)
    sets = {
        "persona_facts_mc": make_facts_mc(demo, rng),
        "persona_register": make_register(demo, rng),
        "general_chat_mc": make_general_mc(demo, rng),
    }
    for task, splits in sets.items():
        for split, rows in splits.items():
            _write_jsonl(args.out / f"{task}.{split}.jsonl", rows)
    counts = {t: {s: len(r) for s, r in sp.items()} for t, sp in sets.items()}
    print(json.dumps(counts), file=sys.stderr)


if __name__ == "__main__":
    main()
