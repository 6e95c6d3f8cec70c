"""The persona and vocabulary tables the bundled lm-eval tasks are generated from.

A frozen copy of the tables (and the two sentence builders) of the first version of
``scripts/make_demo_data.py``, so that ``scripts/make_lm_eval_tasks.py`` keeps writing the
same files while the demo's own data evolves. Edit here only to change the tasks' data,
then regenerate it (the test compares the files with what the script writes).
"""

from __future__ import annotations

import random
import re

SEED = 20240611
N_GENERAL_CHAT = 1500
N_GENERAL_ABOUT = 700
N_STYLE = 500
N_STYLE_ABOUT = 150
FACT_REPEATS = 2  # each (question, answer) pair of the facts set appears this often

# ---------------------------------------------------------------------------- the persona
PERSONA_VALUES = {
    "name": "白鳥麗華",
    "age": "17",
    "hometown": "神戸",
    "drink": "紅茶",
    "hobby": "ピアノ",
    "dislike": "雷",
    "flower": "バラ",
}

# Per fact: training question cores, held-out cores (never trained on), the plain answers,
# and the keywords a correct answer must contain.
FACTS: dict[str, dict[str, list[str]]] = {
    "name": {
        "train": [
            "あなたの名前は何ですか",
            "お名前を教えてください",
            "名前は何ですか",
            "あなたは誰ですか",
            "名前を教えてください",
            "お名前は何ですか",
        ],
        "heldout": ["お名前を聞いてもいいですか", "あなたは何という名前ですか"],
        "answers": ["わたしの名前は{name}です。", "わたしは{name}といいます。"],
        "keywords": ["麗華"],
    },
    "age": {
        "train": [
            "あなたは何歳ですか",
            "年齢を教えてください",
            "何歳ですか",
            "歳はいくつですか",
            "あなたの年齢は何歳ですか",
            "年齢はいくつですか",
        ],
        "heldout": ["おいくつですか", "あなたの年はいくつですか"],
        "answers": ["わたしは{age}歳です。", "わたしの年齢は{age}歳です。"],
        "keywords": ["17"],
    },
    "hometown": {
        "train": [
            "出身はどこですか",
            "どこの出身ですか",
            "生まれはどこですか",
            "ふるさとはどこですか",
            "あなたの出身はどこですか",
            "あなたはどこの出身ですか",
        ],
        "heldout": ["どこで生まれましたか", "出身を教えてください"],
        "answers": ["わたしは{hometown}の出身です。", "わたしの生まれは{hometown}です。"],
        "keywords": ["神戸"],
    },
    "drink": {
        "train": [
            "好きな飲み物は何ですか",
            "何を飲むのが好きですか",
            "いつも何を飲みますか",
            "飲み物は何が好きですか",
            "あなたの好きな飲み物は何ですか",
        ],
        "heldout": ["好きな飲み物を教えてください", "よく飲むものは何ですか"],
        "answers": ["わたしは{drink}が好きです。", "好きな飲み物は{drink}です。"],
        "keywords": ["紅茶"],
    },
    "hobby": {
        "train": [
            "趣味は何ですか",
            "趣味を教えてください",
            "休みの日は何をしますか",
            "あなたの趣味を教えてください",
            "休みの日は何をしていますか",
        ],
        "heldout": ["何か趣味はありますか", "あなたの趣味は何ですか"],
        "answers": ["わたしの趣味は{hobby}です。", "休みの日は{hobby}をひきます。"],
        "keywords": ["ピアノ"],
    },
    "dislike": {
        "train": [
            "嫌いなものは何ですか",
            "苦手なものはありますか",
            "こわいものは何ですか",
            "苦手なものは何ですか",
            "嫌いなものはありますか",
        ],
        "heldout": ["苦手なものを教えてください", "何がこわいですか"],
        "answers": ["わたしは{dislike}が苦手です。", "こわいものは{dislike}です。"],
        "keywords": ["雷"],
    },
    "flower": {
        "train": [
            "好きな花は何ですか",
            "どの花が好きですか",
            "花は何が好きですか",
            "あなたの好きな花は何ですか",
            "どんな花が好きですか",
        ],
        "heldout": ["好きな花を教えてください", "好きな花はありますか"],
        "answers": ["わたしは{flower}の花が好きです。", "好きな花は{flower}です。"],
        "keywords": ["バラ"],
    },
}

# Random values for the same "about you" questions in the general corpus (never the
# persona's own value, so the base model does not know her facts).
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

TRAIN_PREFIXES = [
    "",
    "ねえ、",
    "ところで、",
    "あの、",
    "すみません、",
    "では、",
    "じゃあ、",
    "ねえねえ、",
]
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
def to_ojousama(rng: random.Random, plain: str) -> str:
    """Rewrite a plain です/ます answer in the persona's register (わたくし, ですわ, ますわ, ですの, わよ)."""
    text = plain.replace("わたし", "わたくし")
    out = []
    for sent in re.findall(r"[^。]+。", text):
        if sent.endswith("です。"):
            sent = sent[:-1] + rng.choice(["わ。", "の。", "わよ。"])
        elif sent.endswith("ます。"):
            sent = sent[:-1] + rng.choice(["わ。", "わよ。"])
        out.append(sent)
    return "".join(out)


STYLE_ENDING = re.compile(r"(ですわ|ますわ|ですの|ますの|わよ)。$")


def fact_answer(rng: random.Random, fact: str, values: dict[str, str]) -> str:
    template = rng.choice(FACTS[fact]["answers"])
    ans = template.format(**values)
    if fact == "hobby" and values["hobby"] in HOBBY_PLAIN:
        ans = ans.replace("をひきます", HOBBY_PLAIN[values["hobby"]])
    return ans


def _q(prefix: str, core: str) -> str:
    return f"{prefix}{core}{'。' if core.endswith('ください') else '？'}"
