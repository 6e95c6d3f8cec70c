"""Input files are read on the driver before Ray starts: every bad line with its file and
line number, encoding problems named, one error, exit 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import evomerge.search._run as run_module
from evomerge.cli import app
from evomerge.exceptions import ConfigError
from evomerge.search import run_search

from .conftest import make_run, write_run_yaml

runner = CliRunner()


def _pipeline_yaml(root: Path, models: dict[str, Path], prompts: Path, persona: Path) -> Path:
    data = make_run(models, name="inputs")
    del data["evaluator"]
    data["generation"] = {
        "prompts": str(prompts),
        "persona": str(persona),
        "template": "{question}",
        "params": {"max_new_tokens": 4},
    }
    data["judging"] = {
        "judges": {"len": {"type": "length", "options": {"min_chars": 1, "max_chars": 50}}}
    }
    return write_run_yaml(root / "run.yaml", data)


def test_bad_prompt_lines_and_a_non_utf8_persona_fail_before_ray_starts(
    tiny_models: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "\n".join(
            [
                json.dumps({"question": "fine"}),
                "{not json",
                json.dumps({"question": ""}),
                json.dumps({"question": "ok", "facts": "Kyoto"}),
                json.dumps(["a list"]),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    persona = tmp_path / "persona.yaml"
    persona.write_bytes("name: お嬢様\nprofile: 京都\n".encode("shift_jis"))
    path = _pipeline_yaml(tmp_path, tiny_models.as_dict(), prompts, persona)
    started: list[Any] = []
    monkeypatch.setattr(run_module, "ray_session", lambda *a, **k: started.append(a))
    with pytest.raises(ConfigError) as info:
        run_search(path, run_dir=tmp_path / "rd", progress=False)
    msg = str(info.value)
    assert not started  # Ray was never started
    assert "2 input problem(s); nothing was started" in msg
    for line in (2, 3, 4, 5):  # every bad line, with its file and number
        assert f"{prompts}:{line}: " in msg
    assert f"{persona}:1:7: not UTF-8 text" in msg


def test_a_run_yaml_that_is_not_utf8_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_bytes(
        yaml.safe_dump({"name": "x", "space": "ランダム"}, allow_unicode=True).encode("cp932")
    )
    result = runner.invoke(app, ["search", str(path)])
    assert result.exit_code == 2
    assert result.output.startswith(f"error: {path}:") and "not UTF-8 text" in result.output
    assert "Traceback" not in result.output
