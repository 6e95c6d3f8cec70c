"""Judges: score generated answers, and combine scores into the search objective(s).

- :class:`Sample`, :class:`Score`, the :class:`Judge` protocol;
- LLM judges defined by YAML (``evomerge/data/judges/*.yaml`` and the folders named by
  ``judges_dirs`` / ``--judges-dir``), talking to any OpenAI-compatible endpoint (:class:`LLMJudge`,
  :class:`ChatClient`, :class:`JudgeCache`);
- local judges: ``style_markers``, ``length``, ``fact_recall``, ``bleu``, ``chrf``,
  ``embedding_similarity``, ``perplexity``, ``lm_eval`` (lm-evaluation-harness tasks on the
  live model, :mod:`evomerge.judge.harness`); plugins via entry points ``evomerge.judges``
  or :func:`register_judge` (:data:`JUDGES` is the registry);
- :class:`JudgingConfig` -> :func:`build_objective` -> :class:`Objective`;
- :func:`judge_file`: the ``evomerge judge`` command (scoring a file, calibration).
"""

from evomerge.judge._cache import JudgeCache
from evomerge.judge._client import ChatClient
from evomerge.judge._context import JudgeContext, parse_options
from evomerge.judge._embedding import EmbeddingSimilarityJudge, EmbeddingSimilarityOptions
from evomerge.judge._file import judge_file
from evomerge.judge._llm import LLMJudge
from evomerge.judge._local import LengthJudge, LengthOptions, StyleMarkersJudge, StyleMarkersOptions
from evomerge.judge._objective import (
    CACHE_FILENAME,
    JudgeSpec,
    JudgingConfig,
    Objective,
    ObjectiveResult,
    ObjectiveSpec,
    build_objective,
)
from evomerge.judge._perplexity import PerplexityJudge, PerplexityOptions
from evomerge.judge._reference import BleuJudge, ChrfJudge, FactRecallJudge, FactRecallOptions
from evomerge.judge._registry import (
    ENTRY_POINT_GROUP,
    JUDGES,
    available_judges,
    build_judge,
    register_judge,
    scores_answers,
    type_needs_model,
)
from evomerge.judge._spec import (
    TEMPLATE_FIELDS,
    LLMJudgeDefinition,
    builtin_judges_dir,
    discover_llm_judges,
    load_llm_judge,
)
from evomerge.judge._types import (
    Judge,
    Sample,
    Score,
    nan_score,
    needs_answers,
    needs_generator,
    not_applicable,
)

__all__ = [
    "CACHE_FILENAME",
    "ENTRY_POINT_GROUP",
    "JUDGES",
    "TEMPLATE_FIELDS",
    "BleuJudge",
    "ChatClient",
    "ChrfJudge",
    "EmbeddingSimilarityJudge",
    "EmbeddingSimilarityOptions",
    "FactRecallJudge",
    "FactRecallOptions",
    "Judge",
    "JudgeCache",
    "JudgeContext",
    "JudgeSpec",
    "JudgingConfig",
    "LLMJudge",
    "LLMJudgeDefinition",
    "LengthJudge",
    "LengthOptions",
    "Objective",
    "ObjectiveResult",
    "ObjectiveSpec",
    "PerplexityJudge",
    "PerplexityOptions",
    "Sample",
    "Score",
    "StyleMarkersJudge",
    "StyleMarkersOptions",
    "available_judges",
    "build_judge",
    "build_objective",
    "builtin_judges_dir",
    "discover_llm_judges",
    "judge_file",
    "load_llm_judge",
    "nan_score",
    "needs_answers",
    "needs_generator",
    "not_applicable",
    "parse_options",
    "register_judge",
    "scores_answers",
    "type_needs_model",
]
