"""The ``evomerge`` command line: a thin Typer app, each command calling one library function.

Only this module configures logging handlers. Exit codes: 0 done; 2 a library error
(``EvomergeError``, or a full disk / read-only file system / missing permission), printed
as one clear message; 130 (Ctrl-C) or 143 (SIGTERM) an
interrupted command, which prints :data:`evomerge.interrupt.MESSAGE` after cleaning up
(:mod:`evomerge.interrupt` maps both signals to KeyboardInterrupt in every command).
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from evomerge.atomic import DISK_ERRNOS, write_error
from evomerge.exceptions import EvomergeError
from evomerge.interrupt import MESSAGE, exit_code, interruptible, received

__all__ = ["app"]

app = typer.Typer(
    name="evomerge",
    help="Evolutionary search over merges of fine-tuned LLMs, scored by pluggable judges.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

F = TypeVar("F", bound=Callable[..., Any])

Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars; warnings only.")]


def _setup_logging(quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.INFO
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    for noisy in ("httpx", "httpx2", "openai", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _command(fn: F) -> F:
    """Every command: SIGINT/SIGTERM interrupt it cleanly (exit 130/143 with one line),
    library errors exit 2 with their message."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with interruptible():
            try:
                return fn(*args, **kwargs)
            except EvomergeError as err:
                typer.echo(f"error: {err}", err=True)
                raise typer.Exit(code=2) from None
            except OSError as err:  # a write no library call turned into a WriteError
                if err.errno not in DISK_ERRNOS:
                    raise
                typer.echo(f"error: {write_error(err)}", err=True)
                raise typer.Exit(code=2) from None
            except KeyboardInterrupt:
                typer.echo(MESSAGE, err=True)
                raise typer.Exit(code=exit_code(received())) from None

    return wrapper  # type: ignore[return-value]


@app.command()
@_command
def merge(
    config: Annotated[Path, typer.Argument(help="mergekit-format YAML (the 'models:' form).")],
    out_dir: Annotated[
        Path, typer.Argument(help="Output directory (must not exist, or be empty).")
    ],
    device: Annotated[str, typer.Option(help="Device to merge on: cpu, cuda, cuda:N.")] = "cpu",
    allow_pickle: Annotated[
        bool, typer.Option(help="Allow pickle (.bin/.pt) checkpoints.")
    ] = False,
    shard_size: Annotated[str, typer.Option(help="Max shard size, e.g. 5GB, 500MB.")] = "5GB",
    seed: Annotated[int, typer.Option(help="Seed for the random methods (dare_*, della*).")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty OUT_DIR.")] = False,
    quiet: Quiet = False,
) -> None:
    """Run one merge from a mergekit YAML and write a Hugging Face checkpoint."""
    _setup_logging(quiet)
    from evomerge.export.merge_cmd import merge_from_yaml

    merge_from_yaml(
        config,
        out_dir,
        device=device,
        allow_pickle=allow_pickle,
        shard_size=shard_size,
        seed=seed,
        overwrite=overwrite,
        progress=not quiet,
    )


@app.command()
@_command
def search(
    run_yaml: Annotated[Path, typer.Argument(help="The run configuration (RUN.yaml).")],
    run_dir: Annotated[
        Path | None, typer.Option(help="Run directory (default: runs/<name>).")
    ] = None,
    address: Annotated[str | None, typer.Option(help="Ray cluster address to join.")] = None,
    workers: Annotated[int | None, typer.Option(help="Number of worker actors.")] = None,
    max_trials: Annotated[
        int | None, typer.Option(help="Stop after this many finished trials.")
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Run (or resume) a merge search, then its analysis and report. Re-running resumes it."""
    _setup_logging(quiet)
    from evomerge.orchestrate import search_and_report

    summary = search_and_report(
        run_yaml,
        run_dir=run_dir,
        address=address,
        workers=workers,
        max_trials=max_trials,
        progress=not quiet,
    )
    if summary.stopped == "interrupted":
        raise KeyboardInterrupt  # the driver stopped cleanly; exit as interrupted


@app.command()
@_command
def status(
    run_dir: Annotated[Path, typer.Argument(help="A search's run directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Trials complete/failed/running, the best trial (or Pareto front) and its recipe."""
    _setup_logging(True)
    from evomerge.run import format_status, study_status

    info = study_status(run_dir)
    typer.echo(json.dumps(info, indent=2) if as_json else format_status(info))


@app.command()
@_command
def export(
    run_dir: Annotated[Path, typer.Argument(help="A search's run directory.")],
    out_dir: Annotated[Path, typer.Argument(help="Output checkpoint directory.")],
    trial: Annotated[str, typer.Option(help="'best' or a trial number.")] = "best",
    overwrite: Annotated[
        bool,
        typer.Option(help="Replace a non-empty OUT_DIR (only once the new one is complete)."),
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Export a trial's merge as a HF checkpoint + mergekit.yaml + model card."""
    _setup_logging(quiet)
    from evomerge.export import export_trial

    export_trial(run_dir, out_dir, trial=trial, overwrite=overwrite, progress=not quiet)


@app.command()
@_command
def conflicts(
    base: Annotated[Path, typer.Argument(help="Base model directory.")],
    models: Annotated[
        list[Path], typer.Argument(help="Fine-tuned model or LoRA adapter directories.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Output directory.")],
    density: Annotated[
        float | None, typer.Option(help="TIES top-k trimming density (default: no trim).")
    ] = None,
    trim_scope: Annotated[
        str, typer.Option(help="Trim per 'tensor' (as mergekit) or 'global'.")
    ] = "tensor",
    allow_pickle: Annotated[
        bool, typer.Option(help="Allow pickle (.bin/.pt) checkpoints.")
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Task-vector conflict statistics: sign conflicts, conflict-limited L2 norm."""
    _setup_logging(quiet)
    from evomerge.analysis import run_conflicts

    typer.echo(
        run_conflicts(
            base,
            models,
            out,
            density=density,
            trim_scope=trim_scope,
            allow_pickle=allow_pickle,
            progress=not quiet,
        )
    )


@app.command()
@_command
def judge(
    judge_name: Annotated[
        str, typer.Option("--judge", help="Judge name (a YAML in judges/ or a local judge).")
    ],
    input_path: Annotated[
        Path, typer.Option("--input", help="RESPONSES.jsonl: question, answer, ...")
    ],
    endpoint: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL.")] = None,
    model: Annotated[str | None, typer.Option(help="Judge model name at the endpoint.")] = None,
    api_key_env: Annotated[
        str | None,
        typer.Option(help="Environment variable holding the API key (default: OPENAI_API_KEY)."),
    ] = None,
    structured_choice: Annotated[
        bool,
        typer.Option(
            "--structured-choice",
            help="Restrict replies to the scale's values (vLLM structured outputs).",
        ),
    ] = False,
    judges_dir: Annotated[
        list[Path] | None, typer.Option(help="Extra folders of judge YAMLs.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per answer.")] = False,
    calibrate: Annotated[
        bool, typer.Option(help="Check that good answers outrank bad ones.")
    ] = False,
    timeout: Annotated[
        float, typer.Option(help="Seconds before a judge request is abandoned.")
    ] = 60.0,
    retries: Annotated[
        int, typer.Option(help="Retries of a failed judge request (429/5xx/timeouts).")
    ] = 3,
) -> None:
    """Score a file of answers with one judge (calibration). Exits 2 when none is scored."""
    _setup_logging(True)
    from evomerge.judge import judge_file

    judge_file(
        judge_name,
        input_path,
        endpoint=endpoint,
        model=model,
        api_key_env=api_key_env,
        structured_choice=structured_choice or None,
        judges_dirs=judges_dir or [],
        as_json=as_json,
        calibrate=calibrate,
        timeout=timeout,
        retries=retries,
        echo=typer.echo,
    )


@app.command()
@_command
def report(run_dir: Annotated[Path, typer.Argument(help="A search's run directory.")]) -> None:
    """Write the HTML report (and PNGs) of a run, finished or not."""
    _setup_logging(True)
    from evomerge.report import write_report

    path = write_report(run_dir)
    typer.echo(str(path))


@app.command()
@_command
def demo(
    run_dir: Annotated[Path, typer.Option(help="Run directory.")] = Path("runs/demo"),
    trials: Annotated[int | None, typer.Option(help="Override the number of trials.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the models' training and the search.")] = 0,
    backend: Annotated[
        str, typer.Option(help="Generator: hf, or vllm (vLLM's CPU build on a CPU machine).")
    ] = "hf",
    quiet: Quiet = False,
) -> None:
    """The embedded demo: tiny models, local judges, local Ray, CMA-ES; compares the best
    merge with its sources, its start point and the best uniform-weight merge."""
    _setup_logging(quiet)
    from evomerge.demo.run import run_demo

    result = run_demo(run_dir, trials=trials, progress=not quiet, seed=seed, backend=backend)
    typer.echo(result.format())


if __name__ == "__main__":  # pragma: no cover
    app()
