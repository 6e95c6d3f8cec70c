"""The run report on real (tiny) searches: single objective, Pareto front, a run in progress."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from evomerge.report import load_report_data, write_report
from evomerge.run import open_run
from evomerge.testing.tiny import build_tiny_model, perturb_model


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report_models")
    base = build_tiny_model(root / "base", seed=11, num_layers=4)
    return {
        "base": base,
        "a": perturb_model(base, root / "a", seed=12, scale=0.1),
        "b": perturb_model(base, root / "b", seed=13, scale=0.1),
    }


def _run(
    tmp: Path, models: dict[str, Path], *, name: str, n_trials: int, options: dict[str, Any]
) -> Path:
    from evomerge.search import run_search

    cfg = {
        "name": name,
        "models": {
            "base": str(models["base"]),
            "sources": [str(models["a"]), str(models["b"])],
            "names": ["a", "b"],
        },
        "space": "linear_layerwise",
        "space_overrides": {"layer_granularity": 2},
        "search": {
            "sampler": "tpe" if options.get("n_objectives", 1) > 1 else "cmaes",
            "n_trials": n_trials,
            "seed": 0,
        },
        "evaluator": {"factory": "evomerge.testing.search:quadratic_evaluator", "options": options},
        "workers": {"num": 1, "cpus_per_worker": 0.5},
        "analysis": {"top_k": 0, "report": False},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    run_dir = tmp / name
    run_search(path, run_dir=run_dir, progress=False)
    return run_dir


@pytest.fixture(scope="module")
def ray_once() -> Any:
    """One local Ray for the module; run_search joins it instead of starting its own."""
    import logging
    import shutil
    import tempfile

    import ray

    temp = tempfile.mkdtemp(prefix="evr", dir="/tmp")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        logging_level=logging.WARNING,
        log_to_driver=False,
        _temp_dir=temp,
    )
    yield
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def single_run(
    tmp_path_factory: pytest.TempPathFactory, models: dict[str, Path], ray_once: None
) -> Path:
    return _run(tmp_path_factory.mktemp("single"), models, name="one", n_trials=8, options={})


def _embedded_images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


def test_single_objective_report(single_run: Path) -> None:
    run_dir = single_run
    (run_dir / "baselines.json").write_text(
        json.dumps({"a": {"values": [-0.5], "scores": {"q": -0.5}, "samples": []}}),
        encoding="utf-8",
    )
    path = write_report(run_dir)

    html = path.read_text(encoding="utf-8")
    data = load_report_data(run_dir)
    assert len(data.complete) == 8
    for stem in ("history", "best_recipe", "importance"):
        png = (path.parent / f"{stem}.png").read_bytes()
        assert png.startswith(b"\x89PNG"), stem
        assert f'id="{stem}"' in html
    assert not (path.parent / "pareto.png").exists()  # one objective: no front
    images = _embedded_images(html)
    assert len(images) >= 3 and all(i.startswith(b"\x89PNG") for i in images)
    # the best trial really is the best complete value, and the source baseline is listed
    best = max(t.values[0] for t in data.complete if t.values)
    assert data.best is not None and data.best.values == [best]
    assert data.front == [data.best]
    assert f"<td>{data.best.number}</td>" in html
    assert "source <b>a</b>" in html
    # the best genome's heatmap reads the genome names of the space (groups x sources)
    assert any(k.startswith("g0.") for k in data.best.params)


def test_pareto_report(tmp_path: Path, models: dict[str, Path], ray_once: None) -> None:
    run_dir = _run(tmp_path, models, name="two", n_trials=8, options={"n_objectives": 2})
    path = write_report(run_dir)
    data = load_report_data(run_dir)

    assert len(data.objective_names) == 2
    assert (path.parent / "pareto.png").read_bytes().startswith(b"\x89PNG")
    assert "Pareto front" in path.read_text(encoding="utf-8")
    # the front is non-dominated among the complete trials
    front = [t.values for t in data.front if t.values]
    assert front
    for v in front:
        dominated = any(
            all(o[i] >= v[i] for i in range(2)) and any(o[i] > v[i] for i in range(2))
            for o in (t.values for t in data.complete if t.values)
        )
        assert not dominated


def test_report_on_interrupted_run(tmp_path: Path, single_run: Path) -> None:
    """A trial left RUNNING (driver killed) does not stop the report."""
    import shutil

    run_dir = tmp_path / "cut"
    shutil.copytree(single_run, run_dir)
    study = open_run(run_dir).study.study
    study.ask()  # a trial that stays RUNNING, as after a SIGKILLed driver
    path = write_report(run_dir)
    html = path.read_text(encoding="utf-8")
    assert "running: 1" in html
    assert "complete: 8" in html
