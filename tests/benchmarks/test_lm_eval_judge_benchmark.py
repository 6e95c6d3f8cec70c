"""``benchmarks/lm_eval_judge.py`` at the tiny size: it runs, both paths score the same
requests, and the packed path agrees with the harness's (the full-size figures are in
benchmarks/RESULTS.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

ROOT = Path(__file__).resolve().parents[2]


def test_lm_eval_judge_benchmark_tiny(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "lm_eval_judge.py"),
            *("--size", "tiny", "--models-dir", str(tmp_path), "--dtype", "float32"),
            *("--repeats", "1", "--limit", "4"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["requests"] == 16 and out["contexts"] == 4  # 4 documents, 4 choices each
    assert out["packed_rows_used"]  # not the fallback: the packed path was measured
    assert out["acc"]["evomerge"] == out["acc"]["harness"]
    assert out["greedy_flags_equal"] == out["requests"]
    assert out["max_difference_in_eps_of_value"] <= 64
    assert all(len(v) == 1 and v[0] > 0 for v in out["all_seconds"].values())
    assert out["speedup"] == pytest.approx(
        out["seconds_per_evaluation"]["harness"] / out["seconds_per_evaluation"]["evomerge"],
        rel=0.01,
        abs=0.01,
    )
