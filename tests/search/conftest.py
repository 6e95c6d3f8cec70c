"""Fixtures of the search tests: tiny models, run.yaml writers, mergekit as the oracle."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from evomerge.merge.recipe import MergeRecipe
from evomerge.testing.tiny import build_tiny_model, perturb_model


@pytest.fixture(scope="session")
def six_layer_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 6-layer tiny llama base and two dense fine-tunes (granularity 4 -> groups of 4 and 2)."""
    root = tmp_path_factory.mktemp("search_models6")
    base = build_tiny_model(root / "base", seed=5, num_layers=6)
    return {
        "base": base,
        "ft_a": perturb_model(base, root / "ft_a", seed=6, scale=0.1),
        "ft_b": perturb_model(base, root / "ft_b", seed=7, scale=0.1),
    }


def read_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def run_mergekit(
    recipe: MergeRecipe | dict[str, Any], out_dir: Path, *, seed: int | None = None
) -> dict[str, torch.Tensor]:
    """Merge with mergekit (the oracle) on CPU and read the result back."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import MergeOptions, run_merge

    data = recipe.to_mergekit_dict() if isinstance(recipe, MergeRecipe) else recipe
    cfg = MergeConfiguration.model_validate(data)
    run_merge(
        cfg,
        str(out_dir),
        MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True, random_seed=seed),
    )
    return read_weights(out_dir)


@pytest.fixture(scope="session")
def mergekit_merge() -> Callable[..., dict[str, torch.Tensor]]:
    """``mergekit_merge(recipe, out_dir, seed=None) -> tensors``: mergekit as the oracle."""
    return run_mergekit


@pytest.fixture(scope="session")
def weights_of() -> Callable[[Path], dict[str, torch.Tensor]]:
    """Every tensor of a checkpoint folder."""
    return read_weights


def write_run_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def make_run(
    models: dict[str, Path],
    *,
    name: str = "t",
    space: Any = "linear_layerwise",
    space_overrides: dict[str, Any] | None = None,
    factory: str = "evomerge.testing.search:quadratic_evaluator",
    options: dict[str, Any] | None = None,
    search: dict[str, Any] | None = None,
    workers: dict[str, Any] | None = None,
    sources: tuple[str, ...] = ("ft_a", "ft_b"),
) -> dict[str, Any]:
    """A run.yaml mapping over ``models`` with a custom evaluator (no generation needed)."""
    return {
        "name": name,
        "models": {
            "base": str(models["base"]),
            "sources": [str(models[s]) for s in sources],
            "names": list(sources),
        },
        "space": space,
        "space_overrides": space_overrides or {"layer_granularity": 2},
        "search": {
            "sampler": "cmaes",
            "n_trials": 8,
            "population_size": 4,
            "seed": 0,
            "retries": 1,
            **(search or {}),
        },
        "evaluator": {"factory": factory, "options": options or {}},
        "workers": {
            "num": 2,
            "cpus_per_worker": 0.5,
            "max_restarts": 2,
            "start_timeout_s": 120,
            **(workers or {}),
        },
        "analysis": {"top_k": 0, "report": False},
    }


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    """A local Ray (2 CPUs, 127.0.0.1, its own temp dir) shared by the tests of one module."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    temp = tempfile.mkdtemp(prefix="evr", dir="/tmp")  # short: Ray's socket paths must fit
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
    reap_processes(temp)
    shutil.rmtree(temp, ignore_errors=True)


def reap_processes(marker: str, *, grace_s: float = 3.0) -> list[int]:
    """Kill, by pid, the processes this test started whose command line contains ``marker``
    (a unique temp dir): leftovers of a Ray cluster whose driver was killed. Returns pids."""
    import psutil

    me = os.getpid()
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.info["pid"] != me and marker in " ".join(proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    for proc in found:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(found, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    return [p.pid for p in found]


@pytest.fixture(scope="session")
def reap() -> Callable[..., list[int]]:
    """``reap(marker)``: kill leftover processes whose command line contains ``marker``."""
    return reap_processes


@pytest.fixture(scope="session")
def run_yaml() -> Callable[..., Path]:
    """``run_yaml(path, models, **make_run_kwargs) -> path``: write a test run.yaml."""

    def write(path: Path, models: dict[str, Path], **kwargs: Any) -> Path:
        return write_run_yaml(path, make_run(models, **kwargs))

    return write


def trial_counts(run_dir: Path) -> tuple[int, int, int]:
    """(complete, failed-after-retries, running) as read from the journal; 0s before it exists."""
    from optuna.trial import TrialState

    from evomerge.run import open_run

    try:
        study = open_run(run_dir).study.study
    except Exception:
        return 0, 0, 0
    trials = study.get_trials(deepcopy=False)
    complete = sum(t.state == TrialState.COMPLETE for t in trials)
    failed = sum(t.state == TrialState.FAIL and not t.user_attrs.get("interrupted") for t in trials)
    return complete, failed, sum(t.state == TrialState.RUNNING for t in trials)


def start_cli(args: list[str], *, env: dict[str, str], log: Path) -> Any:
    """``python -m evomerge.cli ARGS`` as a subprocess, its output in ``log`` (a file, not a
    pipe: a full pipe would block the driver)."""
    import subprocess
    import sys

    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "evomerge.cli", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture(scope="session")
def counts() -> Callable[[Path], tuple[int, int, int]]:
    """``counts(run_dir) -> (complete, failed, running)``, read from the run's journal."""
    return trial_counts


@pytest.fixture(scope="session")
def cli_proc() -> Callable[..., Any]:
    """``cli_proc(args, env=..., log=...)``: an ``evomerge`` command as a subprocess."""
    return start_cli
