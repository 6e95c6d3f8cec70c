"""Every input file of a run read on the driver, before Ray starts.

Workers read the prompt sets, the persona and the judges' files when they build their
evaluator, seconds to minutes after the search started, on another machine perhaps. The
driver reads them first, so a bad line or a file that is not UTF-8 is reported at once,
every problem together, each with its file (and line).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from evomerge.config import RunConfig
from evomerge.exceptions import ConfigError
from evomerge.generate import load_persona, load_prompt_set
from evomerge.judge import JudgingConfig, build_objective
from evomerge.search._build import get_evaluator_factory

__all__ = ["check_inputs"]


def _close_objective(judging: JudgingConfig, base_dir: Path | None) -> None:
    # judge YAMLs, their options and files (a texts_path...), API-key variables; no
    # network and no model is loaded (LLM clients and embedders start lazily)
    build_objective(judging, base_dir=base_dir).close()


def _problems(config: RunConfig) -> list[str]:
    checks: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
    if config.evaluator is not None:
        checks.append((get_evaluator_factory, (config.evaluator.factory,)))
    gen = config.generation
    if gen is not None:
        for path in (gen.prompts, gen.heldout_prompts):
            if path is not None:
                checks.append((load_prompt_set, (path,)))
        if gen.persona is not None:
            checks.append((load_persona, (gen.persona,)))
    if config.judging is not None:
        checks.append((_close_objective, (config.judging, config.root)))
    problems = []
    for check, args in checks:
        try:
            check(*args)
        except ConfigError as err:
            problems.append(str(err))
    return problems


def check_inputs(config: RunConfig) -> None:
    """Read what the workers will read (evaluator factory, prompt sets, persona, judges);
    raise one ConfigError listing every problem, each naming its file."""
    problems = _problems(config)
    if problems:
        raise ConfigError(
            f"run {config.name!r}: {len(problems)} input problem(s); nothing was started:\n"
            + "\n".join(problems)
        )
