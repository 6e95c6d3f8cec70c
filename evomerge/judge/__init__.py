"""Judges: score generated answers, and combine scores into the search objective(s).

- :class:`Sample`, :class:`Score`, the :class:`Judge` protocol;
- LLM judges defined by YAML (``evomerge/data/judges/*.yaml``, ``./judges``,
  ``judges_dirs``), talking to any OpenAI-compatible endpoint (:class:`LLMJudge`,
  :class:`ChatClient`, :class:`JudgeCache`);
- local judges: ``style_markers``, ``length``, ``fact_recall``, ``bleu``, ``chrf``,
  ``embedding_similarity``, ``perplexity``; plugins via entry points ``evomerge.judges``;
- :class:`JudgingConfig` -> :func:`build_objective` -> :class:`Objective`;
- :func:`judge_file`: the ``evomerge judge`` command (scoring a file, calibration).
"""

from evomerge.judge._cache import JudgeCache, request_key
from evomerge.judge._client import ChatClient, resolve_api_key
from evomerge.judge._context import JudgeContext, parse_options
from evomerge.judge._embedding import EmbeddingSimilarityJudge, EmbeddingSimilarityOptions
from evomerge.judge._file import (
    Calibration,
    JudgeFileResult,
    ResponseRecord,
    calibrate_scores,
    judge_file,
    read_responses,
)
from evomerge.judge._llm import LLMJudge
from evomerge.judge._local import (
    LengthJudge,
    LengthOptions,
    StyleMarkersJudge,
    StyleMarkersOptions,
    split_sentences,
)
from evomerge.judge._objective import (
    CACHE_FILENAME,
    JudgeSpec,
    JudgingConfig,
    Objective,
    ObjectiveResult,
    ObjectiveSpec,
    build_objective,
)
from evomerge.judge._parse import expected_score, parse_last_line_integer
from evomerge.judge._perplexity import PerplexityJudge, PerplexityOptions
from evomerge.judge._reference import (
    BleuJudge,
    ChrfJudge,
    FactRecallJudge,
    FactRecallOptions,
    content_tokens,
)
from evomerge.judge._registry import (
    ENTRY_POINT_GROUP,
    JUDGES,
    LLM_OVERRIDABLE,
    LOCAL_JUDGES,
    available_judges,
    build_judge,
    is_code_judge,
    register_judge,
)
from evomerge.judge._spec import (
    TEMPLATE_FIELDS,
    LLMJudgeDefinition,
    Scale,
    builtin_judges_dir,
    discover_llm_judges,
    load_llm_judge,
    render_messages,
)
from evomerge.judge._types import Judge, Sample, Score, nan_score, needs_generator, not_applicable

__all__ = [
    "CACHE_FILENAME",
    "ENTRY_POINT_GROUP",
    "JUDGES",
    "LLM_OVERRIDABLE",
    "LOCAL_JUDGES",
    "TEMPLATE_FIELDS",
    "BleuJudge",
    "Calibration",
    "ChatClient",
    "ChrfJudge",
    "EmbeddingSimilarityJudge",
    "EmbeddingSimilarityOptions",
    "FactRecallJudge",
    "FactRecallOptions",
    "Judge",
    "JudgeCache",
    "JudgeContext",
    "JudgeFileResult",
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
    "ResponseRecord",
    "Sample",
    "Scale",
    "Score",
    "StyleMarkersJudge",
    "StyleMarkersOptions",
    "available_judges",
    "build_judge",
    "build_objective",
    "builtin_judges_dir",
    "calibrate_scores",
    "content_tokens",
    "discover_llm_judges",
    "expected_score",
    "is_code_judge",
    "judge_file",
    "load_llm_judge",
    "nan_score",
    "needs_generator",
    "not_applicable",
    "parse_last_line_integer",
    "parse_options",
    "read_responses",
    "register_judge",
    "render_messages",
    "request_key",
    "resolve_api_key",
    "split_sentences",
]
