"""The data-flow demonstration: a layer-path search where the path matters.

::

    result = run_dataflow_demo("runs/dfs", size="full", trials=40)
    print(result["table"])

The sources (:mod:`evomerge.testing.layer_split`) split the persona between their layers:
``style`` learned her register in its lower layers, ``facts`` her facts in its upper
layers. No source, and no prefix of either, has both. A real ``evomerge search`` (local
Ray, CMA-ES over the ``dataflow`` space, the ``hf`` generator, local judges for the
register, the facts and the length) looks for a path through their layers; the start
point is the embedding source's own layers (``style``). Then the sources and the best
path, exported as a standard checkpoint, are scored with the same prompts and judges on
the held-out prompts, and the table and ``dataflow_summary.json`` are written.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import yaml

from evomerge.atomic import atomic_write
from evomerge.config import RunConfig, load_run_config
from evomerge.export import export_trial
from evomerge.generate import HFGenerator, build_prompt_items
from evomerge.judge import Sample, build_objective
from evomerge.report import write_report
from evomerge.run import open_run
from evomerge.search import run_search
from evomerge.testing.layer_split import LayerSplitModels, build_layer_split_models, demo_data_dir

logger = logging.getLogger(__name__)

__all__ = ["STYLE_MARKERS", "dataflow_demo_config", "run_dataflow_demo", "score_checkpoints"]

#: The persona's sentence endings (the register the style source learned).
STYLE_MARKERS = r"(ですわ|ますわ|ですの|ますの|わよ|のよ)$"
SUMMARY_JSON = "dataflow_summary.json"


def dataflow_demo_config(
    models: LayerSplitModels, *, trials: int, workers: int = 2, scales: bool = False
) -> dict[str, Any]:
    """The demonstration's run.yaml as a mapping."""
    data = demo_data_dir()
    return {
        "name": "dataflow-demo",
        "models": {
            "base": str(models.base),
            "sources": [str(models.style), str(models.facts)],
            "names": ["style", "facts"],
        },
        "space": {
            "type": "dataflow",
            "name": "dataflow_demo",
            "embedding": "style",
            "repetitions": 1,
            "order": "stacked",
            "scales": {"search": scales, "low": 0.5, "high": 2.0},
        },
        "search": {"sampler": "cmaes", "n_trials": trials, "population_size": 8, "seed": 0},
        "generation": {
            "backend": "hf",
            "params": {"max_new_tokens": 40, "temperature": 0.0, "stop": ["\n"], "batch_size": 24},
            "prompts": str(data / "prompts.jsonl"),
            "heldout_prompts": str(data / "heldout_prompts.jsonl"),
        },
        "judging": {
            "judges": {
                "style": {"type": "style_markers", "options": {"markers": {STYLE_MARKERS: 1.0}}},
                "facts": {"type": "fact_recall"},
                "length": {"type": "length", "options": {"min_chars": 10, "max_chars": 120}},
            }
        },
        "workers": {"num": workers, "device": "cpu", "cpus_per_worker": 1},
        "analysis": {"top_k": 0, "report": False},
    }


def score_checkpoints(
    config: RunConfig, checkpoints: dict[str, Path], *, split: str
) -> dict[str, dict[str, Any]]:
    """Each checkpoint's objective value and per-judge means on a prompt split, with the
    run's generation settings and judges (the same scoring as the search's)."""
    assert config.generation is not None and config.judging is not None
    objective = build_objective(config.judging, run_dir=None, base_dir=config.root)
    out: dict[str, dict[str, Any]] = {}
    for name, path in checkpoints.items():
        gen = HFGenerator.from_pretrained(path, device="cpu", dtype="float32")
        items = build_prompt_items(config.generation, tokenizer_path=path, split=split)  # type: ignore[arg-type]
        answers = gen.generate([p.prompt for p in items], config.generation.params)
        samples = [Sample.of(p, a) for p, a in zip(items, answers, strict=True)]
        result = objective.evaluate(samples, generator=gen)
        out[name] = {
            "value": float(result.values[0]),
            "scores": {k: float(v) for k, v in result.judge_means.items()},
            "samples": [{"question": s.question, "answer": s.answer} for s in samples[:4]],
        }
    return out


def _table(search: dict[str, dict[str, Any]], heldout: dict[str, dict[str, Any]]) -> str:
    judges = list(next(iter(heldout.values()))["scores"])
    head = (
        f"{'model':<22}" + "".join(f"{j:>9}" for j in judges) + f"{'objective':>11}{'held-out':>10}"
    )
    lines = [head, "-" * len(head)]
    for name, h in heldout.items():
        s = search[name]
        row = f"{name:<22}" + "".join(f"{h['scores'].get(j, math.nan):9.3f}" for j in judges)
        lines.append(row + f"{s['value']:11.3f}{h['value']:10.3f}")
    lines.append("(per-judge scores on the held-out prompts; objective on the search prompts)")
    return "\n".join(lines)


def run_dataflow_demo(
    run_dir: str | Path,
    *,
    size: str = "full",
    trials: int = 40,
    workers: int = 2,
    scales: bool = False,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Build the sources, search, export the best path, score everything; the summary
    (also written to ``RUN_DIR/dataflow_summary.json``)."""
    started = time.monotonic()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    models = build_layer_split_models(cache_dir or run_dir / "models", size)
    built = time.monotonic()
    run_yaml = run_dir / "dataflow_run.yaml"
    cfg_data = dataflow_demo_config(models, trials=trials, workers=workers, scales=scales)
    atomic_write(run_yaml, yaml.safe_dump(cfg_data, sort_keys=False, allow_unicode=True))
    summary_search = run_search(run_yaml, run_dir=run_dir / "run", progress=progress)
    searched = time.monotonic()
    run = open_run(run_dir / "run")
    best = run.study.pick("best")
    path = run.study.path(best)
    exported = export_trial(run_dir / "run", run_dir / "best_model", overwrite=True)
    config = load_run_config(run_yaml)
    checkpoints = {
        "style (= start point)": models.style,
        "facts": models.facts,
        "best path": exported,
    }
    search_scores = score_checkpoints(config, checkpoints, split="search")
    heldout = score_checkpoints(config, checkpoints, split="heldout")
    report = write_report(run_dir / "run")
    others = [v["value"] for k, v in heldout.items() if k != "best path"]
    result = {
        "trials": summary_search.n_complete,
        "best_trial": best.number,
        "best_path": path.describe(),
        "best_slots": [[s.source, s.layer, s.scale] for s in path.slots],
        "search": {
            k: {"value": v["value"], "scores": v["scores"]} for k, v in search_scores.items()
        },
        "heldout": {k: {"value": v["value"], "scores": v["scores"]} for k, v in heldout.items()},
        "heldout_samples": {k: v["samples"] for k, v in heldout.items()},
        "beats_all_heldout": heldout["best path"]["value"] > max(others),
        "seconds": {
            "build_models": round(built - started, 1),
            "search": round(searched - built, 1),
            "total": round(time.monotonic() - started, 1),
        },
        "report": str(report),
        "exported": str(exported),
        "table": _table(search_scores, heldout),
    }
    atomic_write(run_dir / SUMMARY_JSON, json.dumps(result, indent=2, ensure_ascii=False))
    return result
