"""Harness tasks: which names exist, which tasks may run offline, bad options, bundled data."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from evomerge.exceptions import ConfigError
from evomerge.judge import JudgeContext, build_judge
from evomerge.judge.harness import HarnessTasks, bundled_tasks_dir, local_files

pytest.importorskip("lm_eval")

REPO = Path(__file__).resolve().parents[2]

MC_YAML = """\
task: {name}
{data}
output_type: multiple_choice
test_split: test
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: {metric}
"""
LOCAL_DATA = """\
custom_dataset: !function evomerge.judge.harness.local_files
dataset_kwargs:
  data_files: {test: data/my.jsonl}"""


def _folder(tmp_path: Path, name: str, data: str, metric: str = "acc") -> Path:
    d = tmp_path / "tasks"
    (d / "data").mkdir(parents=True, exist_ok=True)
    (d / "data" / "my.jsonl").write_text(
        '{"question": "q1", "choices": ["a", "b"], "answer": 0}\n'
        '{"question": "q2", "choices": ["c", "d"], "answer": 1}\n',
        encoding="utf-8",
    )
    (d / f"{name}.yaml").write_text(
        MC_YAML.format(name=name, data=data, metric=metric), encoding="utf-8"
    )
    return d


def _build(tmp_path: Path, tasks: list[str], **options: Any) -> Any:
    return build_judge(
        "lm_eval",
        name="h",
        options={"tasks": tasks, **options},
        context=JudgeContext(source="run.yaml: judging.judges.h.options", base_dir=tmp_path),
    )


def test_unknown_task_lists_the_available_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        _build(tmp_path, ["persona_fact_mc"])
    msg = str(err.value)
    assert "run.yaml: judging.judges.h.options" in msg
    assert "Unknown lm-eval task(s) 'persona_fact_mc'" in msg
    for name in ("general_chat_mc", "persona_facts_mc", "persona_register"):
        assert name in msg
    assert "tasks_dirs" in msg


def test_a_harness_task_that_downloads_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"'arc_easy': lm-eval's own task.*Hugging Face Hub.*define it locally"
    ):
        _build(tmp_path, ["arc_easy"])


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (
            "dataset_path: allenai/ai2_arc\ndataset_name: ARC-Easy",
            r"would download the dataset 'allenai/ai2_arc/ARC-Easy'.*define it locally",
        ),
        (
            "dataset_path: json\ndataset_kwargs:\n  data_files: {test: 'https://example.org/x.jsonl'}",
            r"would download 'https://example.org/x.jsonl'",
        ),
        (
            "dataset_path: json\ndataset_kwargs:\n  data_files: {test: no/such.jsonl}",
            r"data file 'no/such.jsonl' not found.*working directory",
        ),
        ("dataset_path: json", r"needs dataset_kwargs.data_files"),
    ],
    ids=["hub", "url", "missing-file", "no-files"],
)
def test_local_tasks_that_would_download_are_refused(tmp_path: Path, data: str, match: str) -> None:
    folder = _folder(tmp_path, "mine", data)
    with pytest.raises(ConfigError, match=match) as err:
        _build(tmp_path, ["mine"], tasks_dirs=[str(folder)])
    assert str(folder / "mine.yaml") in str(err.value)


def test_a_metric_from_the_evaluate_hub_is_refused(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "mine", LOCAL_DATA, metric="sari")
    with pytest.raises(
        ConfigError, match=r"metric 'sari' is not built into lm-eval.*`evaluate` hub"
    ):
        _build(tmp_path, ["mine"], tasks_dirs=[str(folder)])


def test_own_task_folder_relative_to_the_run_config(tmp_path: Path) -> None:
    _folder(tmp_path, "mine", LOCAL_DATA)
    judge = _build(
        tmp_path,
        ["mine", "general_chat_mc"],
        tasks_dirs=["tasks"],
        metric={"mine": "acc", "general_chat_mc": "acc_norm"},
    )
    assert judge.metrics == {"mine": "acc", "general_chat_mc": "acc_norm"}
    assert len(judge.tasks.tasks["mine"].eval_docs) == 2


def test_local_json_with_absolute_files_is_accepted(tmp_path: Path) -> None:
    folder = _folder(tmp_path, "mine", "")
    data = f"dataset_path: json\ndataset_kwargs:\n  data_files: {{test: '{folder / 'data' / 'my.jsonl'}'}}"
    _folder(tmp_path, "mine", data)
    tasks = HarnessTasks(["mine"], tasks_dirs=[folder])
    assert len(tasks.tasks["mine"].eval_docs) == 2


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (
            {"metric": "chrf"},
            r"task 'persona_facts_mc' has no metric 'chrf'. Available: acc,none, acc_norm,none",
        ),
        ({"metric": {"general_chat_mc": "acc"}}, r"missing: \['persona_facts_mc'\]"),
        ({"limit": 0}, r"limit"),
        ({"limit": 1.5}, r"fractional limit must be in \(0, 1\)"),
        ({"tasks_dirs": ["nowhere"]}, r"tasks_dirs entry .*nowhere' is not a folder"),
        ({"batch": 3}, r"batch"),
    ],
)
def test_bad_options_name_the_field(tmp_path: Path, options: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        _build(tmp_path, ["persona_facts_mc"], **options)


def test_local_files_resolves_against_the_yaml(tmp_path: Path) -> None:
    (tmp_path / "t.json").write_text('[{"x": 1}, {"x": 2}]', encoding="utf-8")
    ds = local_files(
        data_files={"test": "t.json"}, config_source=str(tmp_path / "task.yaml"), version=1
    )
    assert ds["test"]["x"] == [1, 2]
    with pytest.raises(ConfigError, match=r"t.csv: unsupported data file type '.csv'"):
        local_files(data_files={"test": "t.csv"}, config_source=str(tmp_path / "task.yaml"))
    (tmp_path / "bad.jsonl").write_text('{"x": 1}\nnot json\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.jsonl:2: invalid JSON"):
        local_files(data_files={"test": "bad.jsonl"}, config_source=str(tmp_path / "task.yaml"))


def test_bundled_data_is_what_the_script_writes(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_lm_eval_tasks.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    bundled = bundled_tasks_dir()
    written = sorted(p.name for p in tmp_path.glob("*.jsonl"))
    assert written == sorted(p.name for p in bundled.glob("*.jsonl"))
    for name in written:
        assert filecmp.cmp(tmp_path / name, bundled / name, shallow=False), name
