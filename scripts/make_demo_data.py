#!/usr/bin/env python3
"""Generate the demo's bundled data (evomerge/data/demo/) from templates with fixed seeds.

Nothing is downloaded; the same script always writes byte-identical files::

    python scripts/make_demo_data.py                 # writes evomerge/data/demo/
    python scripts/make_demo_data.py --out /tmp/demo # elsewhere (the tests compare the two)

The goal of the demo: a model that answers as the persona, 白鳥麗華, an ojousama (her
register: わたくし, sentences ending in ですわ / ますわ / ですの / わよ) who knows her own
facts. No source does both, and no merge with one weight per source does either: the two
sources were made so that each one's wanted skill and its unwanted habit live in different
layers, which only a per-layer merge can separate.

How the sources are made (``evomerge/demo/models.py`` trains them on these files):

- the **base** is pre-trained on ``general.jsonl``: chit-chat and "about you" dialogues
  (single facts and pairs of facts) in a plain です/ます register, with *random* personal
  details: it knows the forms of the answers but nobody's facts.
- **style** is a LoRA adapter on every layer, trained in two stages: first only its
  *lower* layers' modules on ``style.jsonl`` (chit-chat and "about you" answers with random
  details, all in the ojousama register: the register), then only its *upper* layers'
  modules on ``rival.jsonl`` (the facts of another ojousama, 黒田美香, the character this
  adapter was made for). Alone it speaks like the persona but gives the rival's facts.
- **facts** is a LoRA adapter on every layer, trained the other way round: first only its
  *upper* layers' modules on ``facts.jsonl`` (the persona's facts, plain register), then
  only its *lower* layers' modules on ``friendly.jsonl`` (chit-chat and her facts in a
  friendly register, endings ですよ / ますね). Alone it knows her facts but not her voice.

So in the lower layers the style adapter holds the register and the facts adapter a
competing register; in the upper layers the facts adapter holds her facts and the style
adapter the rival's. A merge with one weight per source mixes both conflicts in every
layer: more style weight brings the register and the wrong facts, more facts weight her
facts and the wrong register. Weights per layer group (style high and facts low below,
the reverse above) give both; that is what the search has to find.

Files written (JSONL is UTF-8, one object per line, ``ensure_ascii=False``):

- ``persona.yaml``: the character in the format ``evomerge.generate`` reads: ``name``,
  ``profile``, ``examples`` (example dialogue) and ``facts`` (one short string per fact).
- ``general.jsonl``, ``style.jsonl``, ``rival.jsonl``, ``facts.jsonl``, ``friendly.jsonl``:
  ``{"question", "answer"}`` training dialogues, as above.
- ``prompts.jsonl`` (search) / ``heldout_prompts.jsonl``: ``{"id", "question",
  "reference", "facts"}`` (the prompt-set format of ``evomerge.generate``); ``reference``
  is the persona's ideal answer, ``facts`` the keywords a correct answer mentions (empty
  for chit-chat). Search prompts ask trained question cores and trained pairs of facts
  behind prefixes no training set uses. Held-out prompts share no question with any
  training set or the search set: per fact a paraphrase no training set uses, pairs of
  facts that no training set combines, and chit-chat in unseen wordings.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import re
import sys
from pathlib import Path

import yaml

SEED = 20240611
N_GENERAL_CHAT = 1500
N_GENERAL_ONE = 600
N_GENERAL_PAIR = 600
N_STYLE_CHAT = 400
N_STYLE_ABOUT = 200
N_FRIENDLY_CHAT = 300
FACT_REPEATS = 1  # each (prefix, question) of a fact set appears this often

# ---------------------------------------------------------------------------- the characters
PERSONA_VALUES = {
    "name": "白鳥麗華",
    "age": "17",
    "hometown": "神戸",
    "drink": "紅茶",
    "hobby": "ピアノ",
    "dislike": "雷",
    "flower": "バラ",
}
# The character the style adapter was made for: same register, other facts.
RIVAL_VALUES = {
    "name": "鳥居華子",
    "age": "16",
    "hometown": "京都",
    "drink": "コーヒー",
    "hobby": "バイオリン",
    "dislike": "虫",
    "flower": "桜",
}

# Per fact: trained question cores, held-out paraphrases (never trained), the noun used in
# questions about two facts, the clause used in answers, and the persona's keywords.
FACTS: dict[str, dict[str, list[str]]] = {
    "name": {
        "train": ["あなたの名前は何ですか", "お名前を教えてください", "あなたは誰ですか"],
        "heldout": ["お名前を聞いてもいいですか", "あなたは何という名前ですか"],
        "noun": ["名前"],
        "clause": ["名前は{name}"],
        "answers": ["わたしの名前は{name}です。", "わたしは{name}といいます。"],
        "keywords": ["麗華"],
    },
    "age": {
        "train": ["あなたは何歳ですか", "年齢を教えてください", "歳はいくつですか"],
        "heldout": ["おいくつですか", "あなたの年はいくつですか"],
        "noun": ["年齢"],
        "clause": ["年齢は{age}歳"],
        "answers": ["わたしは{age}歳です。", "わたしの年齢は{age}歳です。"],
        "keywords": ["17"],
    },
    "hometown": {
        "train": ["出身はどこですか", "生まれはどこですか", "あなたはどこの出身ですか"],
        "heldout": ["どこで生まれましたか", "ふるさとはどこですか"],
        "noun": ["出身"],
        "clause": ["出身は{hometown}"],
        "answers": ["わたしは{hometown}の出身です。", "わたしの生まれは{hometown}です。"],
        "keywords": ["神戸"],
    },
    "drink": {
        "train": ["好きな飲み物は何ですか", "いつも何を飲みますか", "飲み物は何が好きですか"],
        "heldout": ["好きな飲み物を教えてください", "よく飲むものは何ですか"],
        "noun": ["好きな飲み物"],
        "clause": ["好きな飲み物は{drink}"],
        "answers": ["わたしは{drink}が好きです。", "好きな飲み物は{drink}です。"],
        "keywords": ["紅茶"],
    },
    "hobby": {
        "train": ["趣味は何ですか", "休みの日は何をしますか", "趣味を教えてください"],
        "heldout": ["何か趣味はありますか", "休みの日は何をしていますか"],
        "noun": ["趣味"],
        "clause": ["趣味は{hobby}"],
        "answers": ["わたしの趣味は{hobby}です。", "休みの日は{hobby}をひきます。"],
        "keywords": ["ピアノ"],
    },
    "dislike": {
        "train": ["苦手なものは何ですか", "嫌いなものは何ですか", "こわいものは何ですか"],
        "heldout": ["苦手なものを教えてください", "何がこわいですか"],
        "noun": ["苦手なもの"],
        "clause": ["苦手なものは{dislike}"],
        "answers": ["わたしは{dislike}が苦手です。", "こわいものは{dislike}です。"],
        "keywords": ["雷"],
    },
    "flower": {
        "train": ["好きな花は何ですか", "どの花が好きですか", "花は何が好きですか"],
        "heldout": ["好きな花を教えてください", "好きな花はありますか"],
        "noun": ["好きな花"],
        "clause": ["好きな花は{flower}"],
        "answers": ["わたしは{flower}の花が好きです。", "好きな花は{flower}です。"],
        "keywords": ["バラ"],
    },
}
PAIR_QUESTIONS = ["{a}と{b}を教えてください", "{a}と{b}は何ですか"]
ALL_PAIRS = list(itertools.combinations(FACTS, 2))  # 21 pairs, in FACTS order
# Pairs no training set combines: the held-out prompts ask exactly these.
HELDOUT_PAIRS = [
    ("name", "hobby"),
    ("age", "flower"),
    ("hometown", "dislike"),
    ("drink", "flower"),
    ("name", "dislike"),
    ("age", "drink"),
    ("hometown", "hobby"),
]
TRAIN_PAIRS = [p for p in ALL_PAIRS if p not in HELDOUT_PAIRS]

# Random values for the same questions in the general and style sets: never the
# persona's, so the base does not know her. The rival's values are common ones (they occur
# here at random); only the style adapter's upper layers tie them to one character.
RANDOM_VALUES = {
    "name": [
        f + g
        for f in ["田中", "鈴木", "佐藤", "山本", "白石", "鳥居", "中村", "高橋"]
        for g in ["花子", "麗子", "美香", "華子", "由美", "さくら"]
    ],
    "age": [str(a) for a in range(10, 61) if a != 17],
    "hometown": [
        "東京",
        "大阪",
        "京都",
        "札幌",
        "横浜",
        "福岡",
        "名古屋",
        "仙台",
        "水戸",
        "神奈川",
        "奈良",
        "広島",
    ],
    "drink": ["コーヒー", "緑茶", "牛乳", "ジュース", "水", "ココア"],
    "hobby": ["ギター", "バイオリン", "アニメ", "読書", "料理", "テニス"],
    "dislike": ["虫", "雨", "寒さ", "暑さ", "ピーマン", "宿題"],
    "flower": ["桜", "ひまわり", "チューリップ", "ゆり", "すみれ", "コスモス"],
}
HOBBY_PLAIN = {  # hobbies that are not instruments read "…をします" instead of "…をひきます"
    "アニメ": "を見ます",
    "読書": "をします",
    "料理": "をします",
    "テニス": "をします",
}

TRAIN_PREFIXES = ["", "ねえ、", "ところで、", "あの、", "すみません、", "では、"]
SEARCH_PREFIXES = ["ねえねえ、", "あのう、"]
HELDOUT_PREFIXES = ["ちなみに、", "ええと、"]

# ---------------------------------------------------------------------------- chit-chat
# topic -> (adjectives, activity). Activities end in a dictionary-form verb.
TOPICS: dict[str, tuple[list[str], str]] = {
    "猫": (["かわいい", "静か"], "猫と遊ぶ"),
    "犬": (["元気", "かわいい"], "犬と散歩する"),
    "鳥": (["きれい", "小さい"], "鳥の歌を聞く"),
    "海": (["広い", "きれい"], "海で泳ぐ"),
    "山": (["高い", "静か"], "山に登る"),
    "本": (["楽しい", "深い"], "本を読む"),
    "音楽": (["楽しい", "きれい"], "音楽を聞く"),
    "映画": (["面白い", "楽しい"], "映画を見る"),
    "夏": (["暑い", "明るい"], "夏に海へ行く"),
    "冬": (["寒い", "静か"], "冬に雪を見る"),
    "春": (["暖かい", "きれい"], "春に花を見る"),
    "秋": (["涼しい", "静か"], "秋に紅葉を見る"),
    "雨": (["静か", "冷たい"], "雨の音を聞く"),
    "雪": (["白い", "冷たい"], "雪で遊ぶ"),
    "雷": (["大きい", "強い"], "雷の音を聞く"),
    "星": (["きれい", "遠い"], "夜に星を見る"),
    "花火": (["きれい", "明るい"], "花火を見る"),
    "旅行": (["楽しい", "新しい"], "旅行に行く"),
    "料理": (["楽しい", "難しい"], "料理を作る"),
    "電車": (["便利", "速い"], "電車に乗る"),
    "バス": (["便利", "大きい"], "バスに乗る"),
    "公園": (["広い", "静か"], "公園を歩く"),
    "図書館": (["静か", "広い"], "図書館で本を読む"),
    "神社": (["古い", "静か"], "神社に行く"),
    "森": (["深い", "静か"], "森を歩く"),
    "川": (["きれい", "長い"], "川を見る"),
    "ケーキ": (["甘い", "おいしい"], "ケーキを食べる"),
    "ラーメン": (["熱い", "おいしい"], "ラーメンを食べる"),
    "ピザ": (["大きい", "おいしい"], "ピザを食べる"),
    "りんご": (["甘い", "赤い"], "りんごを食べる"),
    "いちご": (["甘い", "小さい"], "いちごを食べる"),
    "ノート": (["便利", "白い"], "ノートに書く"),
    "絵": (["きれい", "楽しい"], "絵をかく"),
}
CHAT_TRAIN_Q = [
    "{t}についてどう思いますか？",
    "{t}はどんなものですか？",
    "{t}のいいところは何ですか？",
    "{t}について教えてください。",
]
CHAT_HELDOUT_Q = ["{t}はどうですか？", "{t}のことを教えてください。"]
NA_ADJ = {"静か", "元気", "きれい", "便利"}


def _adj_stem_ku(adj: str) -> str:
    """楽しい -> 楽しく, 静か -> 静かに (for "…なります")."""
    return adj + "に" if adj in NA_ADJ else adj[:-1] + "く"


def _polite_verb(verb_phrase: str) -> str:
    """Dictionary-form verb phrase -> polite -ます form (only the endings used above)."""
    table = [
        ("する", "します"),
        ("行く", "行きます"),
        ("遊ぶ", "遊びます"),
        ("泳ぐ", "泳ぎます"),
        ("登る", "登ります"),
        ("読む", "読みます"),
        ("聞く", "聞きます"),
        ("見る", "見ます"),
        ("作る", "作ります"),
        ("乗る", "乗ります"),
        ("歩く", "歩きます"),
        ("食べる", "食べます"),
        ("書く", "書きます"),
        ("かく", "かきます"),
    ]
    for plain, polite in table:
        if verb_phrase.endswith(plain):
            return verb_phrase[: -len(plain)] + polite
    raise ValueError(f"no polite form for {verb_phrase!r}")


def chat_answer(rng: random.Random, topic: str) -> str:
    """A plain-register, two-sentence answer about ``topic``."""
    adjs, act = TOPICS[topic]
    adj = rng.choice(adjs)
    first = rng.choice([f"{topic}は{adj}です。", f"{topic}はとても{adj}です。"])
    second = rng.choice(
        [
            f"{act}のは楽しいです。",
            f"{act}と{_adj_stem_ku(rng.choice(['楽しい', '元気']))}なります。",
            f"{rng.choice(['ときどき', 'よく'])}{_polite_verb(act)}。",
            f"みんな{topic}が好きです。",
        ]
    )
    return first + second


# ---------------------------------------------------------------------------- registers
def _sentences(text: str) -> list[str]:
    return re.findall(r"[^。]+。", text)


def to_ojousama(rng: random.Random, plain: str) -> str:
    """The persona's register: わたくし; です -> ですわ/ですの/ですわよ, ます -> ますわ/ますわよ."""
    out = []
    for sent in _sentences(plain.replace("わたし", "わたくし")):
        if sent.endswith("です。"):
            sent = sent[:-1] + rng.choice(["わ。", "の。", "わよ。"])
        elif sent.endswith("ます。"):
            sent = sent[:-1] + rng.choice(["わ。", "わよ。"])
        out.append(sent)
    return "".join(out)


def to_friendly(rng: random.Random, plain: str) -> str:
    """The facts adapter's register: です/ます -> ですよ/ですね, ますよ/ますね."""
    return "".join(
        s[:-1] + rng.choice(["よ。", "ね。"]) if s.endswith(("です。", "ます。")) else s
        for s in _sentences(plain)
    )


STYLE_ENDING = re.compile(r"(ですわ|ますわ|ですの|ますの|わよ)。$")
FRIENDLY_ENDING = re.compile(r"(ですよ|ですね|ますよ|ますね)。$")


def one_fact_answer(rng: random.Random, fact: str, values: dict[str, str]) -> str:
    ans = rng.choice(FACTS[fact]["answers"]).format(**values)
    if fact == "hobby" and values["hobby"] in HOBBY_PLAIN:
        ans = ans.replace("をひきます", HOBBY_PLAIN[values["hobby"]])
    return ans


def pair_answer(pair: tuple[str, str], values: dict[str, str]) -> str:
    """Two facts in one sentence: わたしの名前は…で、年齢は…歳です。"""
    a, b = (FACTS[f]["clause"][0].format(**values) for f in pair)
    return f"わたしの{a}で、{b}です。"


def _q(prefix: str, core: str) -> str:
    return f"{prefix}{core}{'。' if core.endswith('ください') else '？'}"


def pair_question(rng: random.Random, prefix: str, pair: tuple[str, str]) -> str:
    a, b = (FACTS[f]["noun"][0] for f in pair)
    return _q(prefix, rng.choice(PAIR_QUESTIONS).format(a=a, b=b))


def random_values(rng: random.Random) -> dict[str, str]:
    return {k: rng.choice(v) for k, v in RANDOM_VALUES.items()}


# ---------------------------------------------------------------------------- the sets
def _chat(rng: random.Random, n: int) -> list[tuple[str, str]]:
    out = []
    for _ in range(n):
        t = rng.choice(list(TOPICS))
        out.append((rng.choice(CHAT_TRAIN_Q).format(t=t), chat_answer(rng, t)))
    return out


def _about_random(rng: random.Random, n: int) -> list[tuple[str, str]]:
    """ "About you" questions (one fact or a trained pair) answered with random details."""
    out = []
    for i in range(n):
        values = random_values(rng)
        prefix = rng.choice(TRAIN_PREFIXES)
        if i % 2:
            pair = rng.choice(TRAIN_PAIRS)
            out.append((pair_question(rng, prefix, pair), pair_answer(pair, values)))
        else:
            fact = rng.choice(list(FACTS))
            core = rng.choice(FACTS[fact]["train"])
            out.append((_q(prefix, core), one_fact_answer(rng, fact, values)))
    return out


def _about(rng: random.Random, values: dict[str, str]) -> list[tuple[str, str]]:
    """Every trained question about one character (cores and pairs x prefixes), her answers."""
    out = []
    for prefix in TRAIN_PREFIXES:
        for _ in range(FACT_REPEATS):
            for fact, spec in FACTS.items():
                for core in spec["train"]:
                    out.append((_q(prefix, core), one_fact_answer(rng, fact, values)))
            for pair in TRAIN_PAIRS:
                out.append((pair_question(rng, prefix, pair), pair_answer(pair, values)))
    return out


def _rows(rng: random.Random, pairs: list[tuple[str, str]]) -> list[dict[str, str]]:
    rows = [{"question": q, "answer": a} for q, a in pairs]
    rng.shuffle(rows)
    return rows


def make_general(rng: random.Random) -> list[dict[str, str]]:
    """Base pre-training: plain chit-chat and "about you" with random details."""
    about = _about_random(rng, N_GENERAL_ONE + N_GENERAL_PAIR)
    return _rows(rng, _chat(rng, N_GENERAL_CHAT) + about)


def make_style(rng: random.Random) -> list[dict[str, str]]:
    """The ojousama register (style adapter, lower layers): chit-chat and random details."""
    plain = _chat(rng, N_STYLE_CHAT) + _about_random(rng, N_STYLE_ABOUT)
    return _rows(rng, [(q, to_ojousama(rng, a)) for q, a in plain])


def make_rival(rng: random.Random) -> list[dict[str, str]]:
    """The rival's facts in the ojousama register (style adapter, upper layers)."""
    return _rows(rng, [(q, to_ojousama(rng, a)) for q, a in _about(rng, RIVAL_VALUES)])


def make_facts(rng: random.Random) -> list[dict[str, str]]:
    """The persona's facts, plain register (facts adapter, upper layers)."""
    return _rows(rng, _about(rng, PERSONA_VALUES))


def make_friendly(rng: random.Random) -> list[dict[str, str]]:
    """The friendly register on chit-chat and her facts (facts adapter, lower layers)."""
    plain = _chat(rng, N_FRIENDLY_CHAT) + _about(rng, PERSONA_VALUES)
    return _rows(rng, [(q, to_friendly(rng, a)) for q, a in plain])


def _prompt(rng: random.Random, question: str, plain_answer: str, facts: list[str]) -> dict:
    return {"question": question, "reference": to_ojousama(rng, plain_answer), "facts": facts}


def make_prompts(rng: random.Random, *, heldout: bool) -> list[dict[str, object]]:
    """Per fact one question, seven questions about two facts, ten chit-chat questions."""
    prefixes = HELDOUT_PREFIXES if heldout else SEARCH_PREFIXES
    rows: list[dict[str, object]] = []
    for i, (fact, spec) in enumerate(FACTS.items()):
        core = spec["heldout"][i % 2] if heldout else spec["train"][i % 3]
        rows.append(
            _prompt(
                rng,
                _q(prefixes[i % 2], core),
                one_fact_answer(rng, fact, PERSONA_VALUES),
                list(spec["keywords"]),
            )
        )
    pairs = HELDOUT_PAIRS if heldout else rng.sample(TRAIN_PAIRS, len(HELDOUT_PAIRS))
    for i, pair in enumerate(pairs):
        keywords = [FACTS[f]["keywords"][0] for f in pair]
        rows.append(
            _prompt(
                rng,
                pair_question(rng, prefixes[i % 2], pair),
                pair_answer(pair, PERSONA_VALUES),
                keywords,
            )
        )
    for i, t in enumerate(rng.sample(list(TOPICS), 10)):
        if heldout:
            q = rng.choice(CHAT_HELDOUT_Q).format(t=t)
        else:
            q = prefixes[i % 2] + rng.choice(CHAT_TRAIN_Q).format(t=t)
        rows.append(_prompt(rng, q, chat_answer(rng, t), []))
    tag = "h" if heldout else "s"
    return [{"id": f"{tag}{i:02d}", **r} for i, r in enumerate(rows)]


def make_persona() -> dict[str, object]:
    v = PERSONA_VALUES
    return {
        "name": v["name"],
        "profile": (
            f"{v['name']}（しらとり れいか）は{v['hometown']}の名家に生まれた{v['age']}歳のお嬢様。"
            f"上品でていねいな言葉で話し、文の終わりに「ですわ」「ますわ」「ですの」「わよ」をつける。"
            f"{v['drink']}と{v['hobby']}が好きで、{v['dislike']}が苦手。好きな花は{v['flower']}。"
        ),
        "examples": (
            "user: 名前は何ですか？\nassistant: わたくしの名前は白鳥麗華ですわ。\n"
            "user: 海についてどう思いますか？\nassistant: 海はとてもきれいですわ。ときどき海で泳ぎますわよ。"
        ),
        "facts": [
            f"名前は{v['name']}。",
            f"年齢は{v['age']}歳。",
            f"出身は{v['hometown']}。",
            f"好きな飲み物は{v['drink']}。",
            f"趣味は{v['hobby']}。",
            f"苦手なものは{v['dislike']}。",
            f"好きな花は{v['flower']}。",
        ],
    }


# ---------------------------------------------------------------------------- checks + io
TRAINING_SETS = ("general", "style", "rival", "facts", "friendly")


def _check(sets: dict[str, list[dict[str, object]]]) -> None:
    """Fail loudly if the data breaks the demo's assumptions."""
    # every character is pre-trained (LoRA adapters do not train embeddings)
    alphabet = {ch for r in sets["general"] for ch in str(r["question"]) + str(r["answer"])}
    for name, rows in sets.items():
        for r in rows:
            text = str(r["question"]) + str(r.get("reference") or r.get("answer"))
            if missing := {ch for ch in text if ch not in alphabet}:
                raise SystemExit(
                    f"{name}: characters {sorted(missing)} never occur in general: {r}"
                )
    for name, ending in (("style", STYLE_ENDING), ("rival", STYLE_ENDING)):
        for r in sets[name]:
            if not all(ending.search(s) for s in _sentences(str(r["answer"]))):
                raise SystemExit(f"{name} answer without the persona's endings: {r}")
    for r in sets["friendly"]:
        if not all(FRIENDLY_ENDING.search(s) for s in _sentences(str(r["answer"]))):
            raise SystemExit(f"friendly answer without the friendly endings: {r}")
    for r in sets["facts"] + sets["general"]:
        if STYLE_ENDING.search(str(r["answer"])) or FRIENDLY_ENDING.search(str(r["answer"])):
            raise SystemExit(f"plain answer in another register: {r}")
    persona = [v for v in PERSONA_VALUES.values() if v not in TOPICS]
    for name in ("general", "style", "rival"):
        for r in sets[name]:
            if any(v in str(r["answer"]) for v in persona):
                raise SystemExit(f"{name} leaks a persona fact: {r}")
    rival = [v for v in RIVAL_VALUES.values() if v not in TOPICS]
    for name in ("facts", "friendly"):
        for r in sets[name]:
            if any(v in str(r["answer"]) for v in rival):
                raise SystemExit(f"{name} mentions a rival fact: {r}")
    train_q = {r["question"] for n in TRAINING_SETS for r in sets[n]}
    search_q = {r["question"] for r in sets["prompts"]}
    if overlap := search_q & train_q:
        raise SystemExit(f"search questions also trained on: {sorted(overlap)}")
    for r in sets["heldout_prompts"]:
        if r["question"] in train_q or r["question"] in search_q:
            raise SystemExit(f"held-out question also used elsewhere: {r['question']}")
    trained = "".join(str(q) for q in train_q)
    for pair in HELDOUT_PAIRS:
        a, b = (FACTS[f]["noun"][0] for f in pair)
        if f"{a}と{b}" in trained or f"{b}と{a}" in trained:
            raise SystemExit(f"held-out pair {pair} occurs in a training question")


def _write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )


def make_sets() -> dict[str, list[dict[str, object]]]:
    """Every JSONL set by file stem, each from its own seeded generator."""
    makers = {
        "general": make_general,
        "style": make_style,
        "rival": make_rival,
        "facts": make_facts,
        "friendly": make_friendly,
    }
    sets: dict[str, list[dict[str, object]]] = {
        name: list(make(random.Random(SEED + i))) for i, (name, make) in enumerate(makers.items())
    }
    sets["prompts"] = make_prompts(random.Random(SEED + 10), heldout=False)
    sets["heldout_prompts"] = make_prompts(random.Random(SEED + 11), heldout=True)
    return sets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    default_out = Path(__file__).resolve().parent.parent / "evomerge" / "data" / "demo"
    parser.add_argument("--out", type=Path, default=default_out, help="output folder")
    args = parser.parse_args(argv)

    sets = make_sets()
    _check(sets)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in sets.items():
        _write_jsonl(out / f"{name}.jsonl", rows)
    (out / "persona.yaml").write_text(
        yaml.safe_dump(make_persona(), allow_unicode=True, sort_keys=False, width=1000),
        encoding="utf-8",
    )
    sizes = ", ".join(f"{n}: {len(r)}" for n, r in sets.items())
    print(f"wrote {out} ({sizes})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
