"""RunConfig: everything one search needs, from ``run.yaml``.

::

    name: persona-merge
    models:
      base: ./models/base
      sources: [./models/ft_a, ./models/lora_b]   # full checkpoints or LoRA adapters
      names: [a, b]                               # optional, default from folder names
    space: linear_layerwise        # a shipped space, a YAML path, or an inline mapping
    space_overrides: {layer_granularity: 2}
    search: {sampler: cmaes, n_trials: 200, population_size: 8, seed: 0, retries: 1}
    merge: {dtype: float32, seed: 0}
    generation: {...}              # evomerge.generate.GenerationConfig
    judging: {...}                 # evomerge.judge.JudgingConfig
    workers: {num: auto, device: auto}
    ray: {address: null}
    analysis: {top_k: 3}

Relative paths are resolved against ``root`` (default: the YAML file's folder). Instead of
``generation`` + ``judging``, ``evaluator: {factory: "pkg.module:callable", options: {}}``
plugs in any :class:`evomerge.search.TrialEvaluator` (by a registered name or
``module:callable``; used by tests and benchmarks).
Every invalid field is reported at once, naming the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationInfo,
    field_validator,
    model_validator,
)

from evomerge._yaml import load_yaml, validate_model
from evomerge.dtypes import WORKING_DTYPES, check_dtype_name
from evomerge.exceptions import ConfigError
from evomerge.generate import GenerationConfig
from evomerge.judge import JudgingConfig

if TYPE_CHECKING:
    from evomerge.space import DataflowSpec, SpaceSpec

__all__ = [
    "AnalysisConfig",
    "EvaluatorConfig",
    "MergeConfig",
    "ModelsConfig",
    "PruningConfig",
    "RayConfig",
    "RunConfig",
    "SearchConfig",
    "WorkersConfig",
    "load_run_config",
]

_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelsConfig(_Frozen):
    """The base model and its fine-tuned descendants (full checkpoints or LoRA adapters)."""

    base: Path
    sources: list[Path] = Field(min_length=1)
    names: list[str] | None = None
    allow_pickle: bool = False
    trust_remote_code: bool = False

    def source_names(self) -> list[str]:
        """The sources' names: ``names``, or the folders' names made unique (as the pool)."""
        if self.names is not None:
            return list(self.names)
        from evomerge.pool import unique_names

        return unique_names([p.name for p in self.sources])

    @model_validator(mode="after")
    def _names_match(self) -> ModelsConfig:
        if self.names is not None:
            if len(self.names) != len(self.sources):
                raise ValueError(
                    f"names has {len(self.names)} entries for {len(self.sources)} sources; give one per source"
                )
            if len(set(self.names)) != len(self.names):
                raise ValueError(f"names must be distinct, got {self.names}")
        return self


class PruningConfig(_Frozen):
    """Stopping hopeless trials early (``search.pruning``; ``true``/``false`` is short for
    ``{enabled: ...}``).

    A trial's prompts are generated and judged ``chunk_size`` at a time, in one shuffled
    order shared by every trial of the run (seeded by ``search.seed``). After each chunk a
    one-sided Wilcoxon signed-rank test pairs the trial's per-prompt scores with the best
    trial's on the same prompts; the trial stops as PRUNED when the p-value of "worse" is
    below ``p_threshold`` (and its mean so far is below the best's), once at least
    ``n_startup_steps`` prompts are paired (Optuna's ``WilcoxonPruner`` semantics). A
    pruned trial counts toward ``n_trials``; the sampler ranks it by a paired estimate of
    its full value held below the incumbent's (see :mod:`evomerge.search._sampler`).

    Needs the generate-and-judge evaluator, one objective, judges that score answers
    (not the model itself), and the ``cmaes``, ``tpe`` or ``random`` sampler: otherwise the
    config is refused."""

    enabled: bool = False
    chunk_size: int = Field(default=4, ge=1)
    p_threshold: float = Field(default=0.1, gt=0.0, lt=1.0)
    n_startup_steps: int = Field(default=4, ge=2)

    @model_validator(mode="before")
    @classmethod
    def _from_bool(cls, data: Any) -> Any:
        return {"enabled": data} if isinstance(data, bool) else data


class SearchConfig(_Frozen):
    """The study. ``n_trials`` counts finished trials (complete, pruned, or failed after retries).

    ``stop_after_infra_failures``: evaluations failed in a row by an infrastructure error
    (judge endpoint down or refusing the key, a dead generator) after which the search
    stops, keeping what finished and putting the rest back for the resume.

    ``overlap_judging``: each worker merges and generates the next trial while the previous
    trial's judges (an LLM judge behind a network) are still scoring, so the accelerator
    does not wait for them: two trials in flight per worker, the accelerator used by one at
    a time. It needs an evaluator with separate generate and judge stages (the built-in
    ``pipeline`` one) and a judge that does not score the model itself; with ``cmaes`` an
    explicit ``population_size`` must hold both trials of every worker."""

    sampler: Literal["cmaes", "tpe", "random", "nsga2"] = "cmaes"
    n_trials: int = Field(default=100, ge=1)
    population_size: int | None = Field(default=None, ge=2)
    seed: int = Field(default=0, ge=0)
    storage: Literal["journal", "sqlite"] = "journal"
    retries: int = Field(default=1, ge=0)
    trial_timeout_s: float | None = Field(default=None, gt=0)
    stop_after_infra_failures: int = Field(default=3, ge=1)
    x0: Literal["equal", "none"] = "equal"
    overlap_judging: bool = False
    pruning: PruningConfig = PruningConfig()


class MergeConfig(_Frozen):
    """How workers materialize recipes. ``seed`` fixes DARE's random drops for the run.

    ``cache``: keep the merge engine's precomputations (mergekit's magnitude orders for
    ties/breadcrumbs, DARE/DELLA noise) in the run directory's ``merge_cache/``, keyed by
    the models' content, so that the workers on a node and a resumed run compute them once.
    It takes about 4 bytes per parameter and source model for each order (2 for noise).
    """

    dtype: str = "float32"  # one of evomerge.dtypes.WORKING_DTYPES
    seed: int = Field(default=0, ge=0)
    device: str = "auto"
    cache: bool = True

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, v: str) -> str:
        return check_dtype_name(v, allowed=WORKING_DTYPES, field="dtype")


class WorkersConfig(_Frozen):
    """Worker actors: one per GPU (``gpus_per_worker``), or per CPU slot (``cpus_per_worker``)."""

    num: int | Literal["auto"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    gpus_per_worker: float = Field(default=1.0, gt=0)
    cpus_per_worker: float = Field(default=1.0, gt=0)
    max_restarts: int = Field(default=3, ge=0)
    start_timeout_s: float = Field(default=600.0, gt=0)

    @field_validator("num")
    @classmethod
    def _positive(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError(
                f"need at least one worker, got {v}; use 'auto' for one per GPU/CPU slot"
            )
        return v


class RayConfig(_Frozen):
    """``address`` None starts a local cluster on 127.0.0.1; otherwise joins that cluster."""

    address: str | None = None
    include_dashboard: bool = False
    num_cpus: int | None = Field(default=None, ge=1)
    num_gpus: int | None = Field(default=None, ge=0)


class AnalysisConfig(_Frozen):
    """At the end of a search: task-vector conflict analysis of the top-K trials (0: off)
    and the HTML report (``report``)."""

    top_k: int = Field(default=3, ge=0)
    report: bool = True


class EvaluatorConfig(_Frozen):
    """A trial evaluator: ``factory`` is a registered name (``pipeline``, plug-ins) or
    ``"package.module:callable"``; called as ``factory(config, *, device, worker_index,
    run_dir, **options)``."""

    factory: str = Field(pattern=r"^([A-Za-z_][\w.]*:[A-Za-z_]\w*|[A-Za-z_][\w\-]*)$")
    options: dict[str, Any] = Field(default_factory=dict)


class RunConfig(_Frozen):
    """One search run. Build with :func:`load_run_config` (or ``model_validate`` with a
    ``{"base_dir": ...}`` validation context) so relative paths resolve."""

    name: str = Field(pattern=_NAME_PATTERN)
    root: Path | None = None
    models: ModelsConfig
    space: str | dict[str, Any]
    space_overrides: dict[str, Any] = Field(default_factory=dict)
    search: SearchConfig = SearchConfig()
    merge: MergeConfig = MergeConfig()
    generation: GenerationConfig | None = None
    judging: JudgingConfig | None = None
    evaluator: EvaluatorConfig | None = None
    workers: WorkersConfig = WorkersConfig()
    ray: RayConfig = RayConfig()
    analysis: AnalysisConfig = AnalysisConfig()

    @model_validator(mode="wrap")
    @classmethod
    def _resolve_paths(
        cls, data: Any, handler: ModelWrapValidatorHandler[RunConfig], info: ValidationInfo
    ) -> RunConfig:
        if isinstance(data, Mapping) and data.get("root") is None:
            base_dir = (info.context or {}).get("base_dir")
            if base_dir is not None:
                data = {**data, "root": str(Path(base_dir).resolve())}
        cfg = handler(data)
        return cfg._with_absolute_paths()

    def _with_absolute_paths(self) -> RunConfig:
        if self.root is None:
            return self
        root = self.root

        def fix(p: Path) -> Path:
            return p if p.is_absolute() else root / p

        models = self.models.model_copy(
            update={"base": fix(self.models.base), "sources": [fix(s) for s in self.models.sources]}
        )
        update: dict[str, Any] = {"models": models}
        if self.generation is not None:
            update["generation"] = self.generation.resolve_paths(root)
        return self.model_copy(update=update)

    @model_validator(mode="after")
    def _complete(self) -> RunConfig:
        if self.evaluator is None and (self.generation is None or self.judging is None):
            missing = [k for k in ("generation", "judging") if getattr(self, k) is None]
            raise ValueError(
                f"missing section(s) {missing}: a search scores candidates by generating answers and judging "
                "them; give both, or an 'evaluator: {factory: module:callable}'"
            )
        spec = self.space_spec()  # a bad space is reported here, with the file of the run config
        from evomerge.space import DataflowSpec, dataflow_run_problems

        if isinstance(spec, DataflowSpec):
            problems = dataflow_run_problems(
                spec,
                model_names=self.models.source_names(),
                backend=self.generation.backend if self.generation is not None else None,
            )
            if problems:
                raise ValueError("; ".join(problems))
        problems = self._overlap_problems() if self.search.overlap_judging else []
        pruning = self._pruning_problem()
        if pruning:
            problems.append(f"search.pruning: {pruning}; or set search.pruning: false")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _overlap_problems(self) -> list[str]:
        """Why ``search.overlap_judging`` cannot be honoured by this run (empty: it can)."""
        from evomerge.judge import type_needs_model

        out = []
        if self.judging is not None and self.evaluator is None:
            on_model = [n for n, j in self.judging.judges.items() if type_needs_model(j.type)]
            if len(on_model) == len(self.judging.judges):
                out.append(
                    f"search.overlap_judging: every judge ({', '.join(on_model)}) scores the "
                    "candidate model itself, so judging needs the accelerator and cannot overlap "
                    "the next trial's generation; set it to false"
                )
        workers, pop = self.workers.num, self.search.population_size
        cmaes = self.search.sampler == "cmaes"
        if cmaes and pop is not None and isinstance(workers, int) and pop < 2 * workers:
            out.append(
                f"search.overlap_judging: keeps 2 trials in flight per worker, {2 * workers} "
                f"with workers.num {workers}, more than search.population_size {pop}: CMA-ES "
                "would ask the extra trials from a generation already full and drop them "
                f"from its update; raise population_size to >= {2 * workers} or set "
                "overlap_judging to false"
            )
        return out

    def _pruning_problem(self) -> str | None:
        """Why this run cannot stop trials early (None: it can, or pruning is off)."""
        if not self.search.pruning.enabled:
            return None
        if self.search.overlap_judging:
            return (
                "a trial judges each chunk before generating the next, so its judging cannot "
                "overlap the next trial (search.overlap_judging); choose one of the two"
            )
        if self.search.sampler == "nsga2":
            return "the nsga2 sampler (a Pareto front) does not use pruned trials; use cmaes, tpe or random"
        if self.evaluator is not None:
            return (
                f"the evaluator {self.evaluator.factory!r} does not score prompts one by one; "
                "pruning needs the generate-and-judge evaluator (no 'evaluator:' section)"
            )
        assert self.judging is not None
        if len(self.judging.objectives) > 1:
            return (
                f"judging.objectives has {len(self.judging.objectives)} objectives; pruning "
                "compares one objective per prompt"
            )
        from evomerge.judge import scores_answers

        whole = [n for n, j in self.judging.judges.items() if not scores_answers(j.type)]
        if whole:
            return (
                f"judge(s) {', '.join(whole)} score the model as a whole, not each prompt's "
                "answer, so a trial cannot be compared prompt by prompt"
            )
        return None

    def space_spec(self) -> SpaceSpec | DataflowSpec:
        """The validated :class:`evomerge.space.SpaceSpec`, or :class:`DataflowSpec` for
        ``type: dataflow`` (overrides applied).

        evomerge.space (which needs the merge registry, hence torch) is imported on first
        use, so importing this module stays light."""
        from evomerge.space import load_space_spec

        try:
            return load_space_spec(self.space, base_dir=self.root, overrides=self.space_overrides)
        except ConfigError as err:
            raise ValueError(f"space: {err}") from None

    def canonical(self) -> dict[str, Any]:
        """A JSON-able dict of the run with the space resolved (compared on resume)."""
        data = self.model_dump(mode="json")
        data["space"] = self.space_spec().model_dump(mode="json")
        data["space_overrides"] = {}
        return data


def load_run_config(path: str | Path) -> RunConfig:
    """Load and validate ``run.yaml``; relative paths are resolved against its folder.

    Raises ConfigError naming the file and every invalid field.
    """
    path = Path(path)
    data = load_yaml(path)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return validate_model(RunConfig, data, source=str(path), context={"base_dir": path.parent})
