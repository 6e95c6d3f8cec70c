"""``evomerge search`` with ``generation.backend: vllm`` on CPU through Ray workers, judged
by an LLM judge served by vLLM's OpenAI server (API key required), against the same
search with the hf backend: same recipes, same answers. Afterwards no file the runs wrote
(run directories, Ray's session logs, the command's output) holds the key.

Both searches run as ``evomerge search`` subprocesses with their own Ray temp dir, so
that Ray's worker logs can be read here, and the key only in the environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from optuna.trial import TrialState

from evomerge.run import attrs, open_run

pytestmark = pytest.mark.vllm

N_TRIALS = 6
JUDGE_YAML = """\
system_prompt: Rate the answer from 1 to 7. End with the score on the last line.
user_template: "Q: {question}\\nA: {answer}"
scale: {min: 1, max: 7}
parsing: last_line_integer
max_tokens: 4
"""
QUESTIONS = ["hello there", "Why is the sky blue?", "Tell me a story.", "1 2 3", "ok?"]


def _run_yaml(root: Path, models: Any, server: Any, backend: str) -> Path:
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"question": q}) + "\n" for q in QUESTIONS))
    (root / "judges").mkdir(exist_ok=True)
    (root / "judges" / "tiny_judge.yaml").write_text(JUDGE_YAML)
    options = {"max_model_len": 512, "kv_cache_memory_bytes": 64 << 20}
    data = {
        "name": f"vllm-{backend}",
        "models": {
            "base": str(models.llama),
            "sources": [str(models.llama_ft[0]), str(models.llama_ft[1])],
            "names": ["a", "b"],
        },
        "space": "linear_layerwise",
        "space_overrides": {"layer_granularity": 2},
        "search": {"sampler": "random", "n_trials": N_TRIALS, "seed": 0, "retries": 1},
        "merge": {"dtype": "float32", "seed": 0},
        "generation": {
            "backend": backend,
            "params": {"max_new_tokens": 16, "temperature": 0.0},
            "prompts": str(prompts),
            "backend_options": options if backend == "vllm" else {},
        },
        "judging": {
            "judges_dirs": [str(root / "judges")],
            "judges": {
                "tiny": {
                    "type": "tiny_judge",
                    "endpoint": server.url,
                    "model": server.model_name,
                    "options": {"structured_choice": True},
                }
            },
        },
        "workers": {"num": 2, "device": "cpu", "cpus_per_worker": 1, "start_timeout_s": 900},
        "ray": {"num_cpus": 2},
        "analysis": {"top_k": 0, "report": True},
    }
    path = root / f"{backend}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def searches(
    vllm_judge_server: Any,
    vllm_models: Any,
    tmp_path_factory: pytest.TempPathFactory,
    reap: Callable[..., list[int]],
) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("vllm_search")
    out: dict[str, Any] = {"root": root, "ray_tmp": []}
    for backend in ("hf", "vllm"):
        ray_tmp = tempfile.mkdtemp(prefix="evv", dir="/tmp")  # short: Ray's socket paths
        out["ray_tmp"].append(Path(ray_tmp))
        env = {k: v for k, v in os.environ.items() if k != "VLLM_API_KEY"}
        env.update(OPENAI_API_KEY=vllm_judge_server.api_key, RAY_TMPDIR=ray_tmp)
        cmd = [sys.executable, "-m", "evomerge.cli", "search"]
        cmd += [str(_run_yaml(root, vllm_models, vllm_judge_server, backend))]
        cmd += ["--run-dir", str(root / f"run_{backend}")]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, env=env, cwd=root, timeout=1500
            )
        finally:
            reap(ray_tmp)
        (root / f"search_{backend}.stdout").write_text(proc.stdout)
        (root / f"search_{backend}.stderr").write_text(proc.stderr)
        assert proc.returncode == 0, proc.stderr[-4000:]
        out[backend] = root / f"run_{backend}"
    yield out
    for d in out["ray_tmp"]:
        shutil.rmtree(d, ignore_errors=True)


def _trials(run_dir: Path) -> dict[int, Any]:
    return {t.number: t for t in open_run(run_dir).study.trials()}


def test_vllm_search_completes_and_gives_the_hf_answers(searches: dict[str, Any]) -> None:
    hf, vl = _trials(searches["hf"]), _trials(searches["vllm"])
    done = [t for t in vl.values() if t.state == TrialState.COMPLETE]
    assert len(done) >= N_TRIALS, [(t.number, t.state, t.user_attrs) for t in vl.values()]
    for n, t in vl.items():
        if t.state != TrialState.COMPLETE:
            continue
        assert t.params == hf[n].params  # the same recipe ...
        assert (
            t.user_attrs[attrs.SAMPLES] == hf[n].user_attrs[attrs.SAMPLES]
        )  # ... the same answers
        assert 1.0 <= t.values[0] <= 7.0  # a real score from the judge on vLLM's server
    answers = {s["answer"] for t in done for s in t.user_attrs[attrs.SAMPLES]}
    assert len(answers) > 3  # different recipes, different answers


def test_the_api_key_is_written_nowhere(searches: dict[str, Any], vllm_judge_server: Any) -> None:
    secret = vllm_judge_server.api_key.encode()
    roots = [searches["root"], *searches["ray_tmp"], vllm_judge_server.log]
    files = [p for r in roots for p in ([r] if r.is_file() else r.rglob("*")) if p.is_file()]
    names = {p.name for p in files}
    assert "judge_cache.sqlite" in names and any(n.endswith(".err") for n in names)
    leaked = [str(p) for p in files if secret in p.read_bytes()]
    assert leaked == []
