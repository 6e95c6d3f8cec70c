"""``evomerge search`` with ``generation.backend: vllm`` on CPU through Ray workers, judged
by an LLM judge served by vLLM's OpenAI server (API key required); the same recipes
evaluated with the hf backend give the same answers. Afterwards no file the run wrote
(run directory, Ray's session logs, the command's output) holds the key.

The search runs as an ``evomerge search`` subprocess with its own Ray temp dir, so that
Ray's worker logs can be read here, and the key only in the environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

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
def search(
    vllm_judge_server: Any,
    vllm_models: Any,
    tmp_path_factory: pytest.TempPathFactory,
    reap: Callable[..., list[int]],
) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("vllm_search")
    ray_tmp = Path(tempfile.mkdtemp(prefix="evv", dir="/tmp"))  # short: Ray's socket paths
    env = {k: v for k, v in os.environ.items() if k != "VLLM_API_KEY"}
    env.update(OPENAI_API_KEY=vllm_judge_server.api_key, RAY_TMPDIR=str(ray_tmp))
    cmd = [sys.executable, "-m", "evomerge.cli", "search"]
    cmd += [str(_run_yaml(root, vllm_models, vllm_judge_server, "vllm")), "--run-dir"]
    cmd += [str(root / "run")]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root, timeout=1500)
    finally:
        reap(str(ray_tmp))
    (root / "search.stdout").write_text(proc.stdout)
    (root / "search.stderr").write_text(proc.stderr)
    assert proc.returncode == 0, proc.stderr[-4000:]
    yield {"root": root, "run": root / "run", "ray_tmp": ray_tmp}
    shutil.rmtree(ray_tmp, ignore_errors=True)


def test_vllm_search_completes_and_gives_the_hf_answers(
    search: dict[str, Any], vllm_judge_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from evomerge.search import PipelineEvaluator

    run = open_run(search["run"])
    done = run.study.complete()
    assert len(done) >= N_TRIALS, [(t.number, t.state, t.user_attrs) for t in run.study.trials()]
    assert len({t.user_attrs[attrs.WORKER] for t in done}) == 2  # both Ray workers worked
    assert all(1.0 <= t.values[0] <= 7.0 for t in done)  # scores from vLLM's judge server
    # the same recipes through the hf backend (the search's own evaluator, in this process)
    assert run.config.generation is not None
    hf_cfg = run.config.model_copy(
        update={
            "generation": run.config.generation.model_copy(
                update={"backend": "hf", "backend_options": {}}
            )
        }
    )
    monkeypatch.setenv("OPENAI_API_KEY", vllm_judge_server.api_key)
    hf = PipelineEvaluator(hf_cfg, device="cpu")
    for t in done:
        want = hf.evaluate(t.number, run.study.recipe(t)).samples
        assert t.user_attrs[attrs.SAMPLES] == want, f"trial {t.number}"
    answers = {s["answer"] for t in done for s in t.user_attrs[attrs.SAMPLES]}
    assert len(answers) > 3  # different recipes, different answers


def test_the_api_key_is_written_nowhere(search: dict[str, Any], vllm_judge_server: Any) -> None:
    secret = vllm_judge_server.api_key.encode()
    roots = [search["root"], search["ray_tmp"], vllm_judge_server.log]
    files = [p for r in roots for p in ([r] if r.is_file() else r.rglob("*")) if p.is_file()]
    names = {p.name for p in files}
    assert "judge_cache.sqlite" in names and any(n.endswith(".err") for n in names)
    worker_logs = b"".join(p.read_bytes() for p in files if p.name.startswith("worker-"))
    assert b"Initializing a V1 LLM engine" in worker_logs  # vLLM really ran in the workers
    leaked = [str(p) for p in files if secret in p.read_bytes()]
    assert leaked == []
