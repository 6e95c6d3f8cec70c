"""Finding a judge by name: code judges (a :class:`~evomerge.registry.Registry`), then
LLM judge YAMLs.

Lookup order for a judge type name:

1. judges registered in this process with :func:`register_judge` (they may replace a
   built-in with ``replace=True``);
2. the local judges shipped here (:data:`LOCAL_JUDGES`);
3. plugins: entry points in the group ``evomerge.judges`` whose value is a factory
   ``factory(*, name: str, options: Mapping, context: JudgeContext) -> Judge``;
4. LLM judge YAMLs: the shipped ones, then ``judges_dirs`` in order (later folders
   override earlier ones). A ``judges/`` folder is used only when it is named there
   (``--judges-dir`` / ``judging.judges_dirs``).

An unknown name is an UnknownPluginError (a ConfigError) listing every available name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from evomerge.exceptions import ConfigError
from evomerge.judge._cache import JudgeCache
from evomerge.judge._client import ChatClient
from evomerge.judge._context import JudgeContext
from evomerge.judge._embedding import EmbeddingSimilarityJudge
from evomerge.judge._llm import LLMJudge
from evomerge.judge._local import LengthJudge, StyleMarkersJudge
from evomerge.judge._perplexity import PerplexityJudge
from evomerge.judge._reference import BleuJudge, ChrfJudge, FactRecallJudge
from evomerge.judge._spec import definition_with_overrides, discover_llm_judges, load_llm_judge
from evomerge.judge._types import Judge
from evomerge.judge.harness import LMEvalJudge
from evomerge.registry import Registry

logger = logging.getLogger(__name__)

__all__ = [
    "ENTRY_POINT_GROUP",
    "JUDGES",
    "LLM_OVERRIDABLE",
    "LOCAL_JUDGES",
    "JudgeFactory",
    "available_judges",
    "build_judge",
    "is_code_judge",
    "register_judge",
    "scores_answers",
    "type_needs_model",
]

ENTRY_POINT_GROUP = "evomerge.judges"
JudgeFactory = Callable[..., Judge]  # factory(*, name, options, context) -> Judge

LOCAL_JUDGES: dict[str, JudgeFactory] = {
    "bleu": BleuJudge.from_options,
    "chrf": ChrfJudge.from_options,
    "embedding_similarity": EmbeddingSimilarityJudge.from_options,
    "fact_recall": FactRecallJudge.from_options,
    "length": LengthJudge.from_options,
    "lm_eval": LMEvalJudge.from_options,
    "perplexity": PerplexityJudge.from_options,
    "style_markers": StyleMarkersJudge.from_options,
}
# The fields of a judge YAML that a run.yaml may override per judge instance (``options:``).
LLM_OVERRIDABLE = ("samples", "temperature", "max_tokens", "top_logprobs", "structured_choice")


def _check_factory(name: str, obj: object) -> JudgeFactory:
    if not callable(obj):
        raise TypeError(f"judge {name!r} must be a factory callable, got {type(obj).__name__}")
    return obj


#: Code judges: the local ones, registered ones and ``evomerge.judges`` plugins.
JUDGES: Registry[JudgeFactory] = Registry(
    "judge",
    builtins=LOCAL_JUDGES,
    group=ENTRY_POINT_GROUP,
    check=_check_factory,
    hint="An LLM judge is a YAML file in a folder named by judges_dirs / --judges-dir.",
)


def register_judge(name: str, factory: JudgeFactory, *, replace: bool = False) -> None:
    """Make ``name`` build judges with ``factory`` in this process (plugins use entry points)."""
    JUDGES.register(name, factory, replace=replace)


def _class_flag(type_name: str, attr: str, default: bool) -> bool:
    """Flag ``attr`` of the class behind a code judge's factory (a bound ``from_options``,
    or the class itself), read without building a judge. ``default`` for LLM judge YAMLs,
    unknown names and plug-ins that fail to load (reported when the judge is built)."""
    try:
        factory = JUDGES.find(type_name)
    except Exception:
        return default
    if factory is None:
        return default
    owner = getattr(factory, "__self__", factory)
    return bool(getattr(owner, attr, default))


def scores_answers(type_name: str) -> bool:
    """Whether judges of ``type_name`` score each generated answer (False for those that
    score the model itself, such as ``perplexity`` and ``lm_eval``), known without
    building one: a code judge says so with its class's ``needs_answers``; LLM judges and
    unknown names score answers."""
    return _class_flag(type_name, "needs_answers", True)


def available_judges(judges_dirs: Iterable[str | Path] = ()) -> dict[str, str]:
    """Every judge name -> where it comes from (``local``, ``registered``, ``plugin ...``, a YAML path)."""
    out: dict[str, str] = {
        name: str(path) for name, path in discover_llm_judges(judges_dirs).items()
    }
    for name, origin in JUDGES.origins().items():
        out[name] = "local" if origin == "built-in" else origin
    return dict(sorted(out.items()))


def build_judge(
    type_name: str,
    *,
    name: str | None = None,
    options: Mapping[str, Any] | None = None,
    judges_dirs: Iterable[str | Path] = (),
    endpoint: str | None = None,
    model: str | None = None,
    api_key_env: str | None = None,
    client: ChatClient | None = None,
    client_options: Mapping[str, Any] | None = None,
    clients: dict[tuple[Any, ...], ChatClient] | None = None,
    cache: JudgeCache | None = None,
    context: JudgeContext | None = None,
) -> Judge:
    """Build the judge ``type_name`` as instance ``name`` (default: the type name).

    For LLM judges ``endpoint``/``model``/``api_key_env`` override the YAML's defaults and
    ``options`` may override :data:`LLM_OVERRIDABLE`. Pass ``client`` to use that client, or
    ``clients`` (a dict the caller keeps and closes) to share one client, hence one
    connection pool and concurrency bound, per endpoint/model/key/settings; otherwise a
    client is created and owned (closed) by the judge.
    Raises ConfigError for unknown names and bad options.
    """
    name = name or type_name
    options = dict(options or {})
    context = context or JudgeContext(source=f"judge {name!r} options")
    dirs = list(judges_dirs)
    factory = JUDGES.find(type_name)
    if factory is not None:
        return factory(name=name, options=options, context=context)
    yamls = discover_llm_judges(dirs)
    if type_name not in yamls:
        raise JUDGES.unknown(type_name, more=yamls)
    path = yamls[type_name]
    defn = load_llm_judge(path)
    bad = sorted(set(options) - set(LLM_OVERRIDABLE))
    if bad:
        raise ConfigError(
            f"{context.source}: LLM judge {type_name!r} does not take option(s) {', '.join(bad)}. "
            f"Allowed: {', '.join(LLM_OVERRIDABLE)}"
        )
    if options:
        defn = definition_with_overrides(defn, options, source=context.source)
    owns = client is None and clients is None
    if client is None:
        endpoint = endpoint or defn.endpoint
        model = model or defn.model
        if not endpoint or not model:
            raise ConfigError(
                f"judge {name!r} is an LLM judge ({path}); it needs an endpoint and a model, e.g. "
                "--endpoint http://localhost:8000/v1 --model Qwen/Qwen2.5-7B-Instruct "
                "(in run.yaml: judging.judges.<name>.endpoint / .model)"
            )
        kw: dict[str, Any] = dict(
            endpoint=endpoint,
            model=model,
            api_key_env=api_key_env or defn.api_key_env,
            **dict(client_options or {}),
        )
        key = tuple(sorted((k, repr(v)) for k, v in kw.items()))
        if clients is not None and key in clients:
            client = clients[key]
        else:
            client = ChatClient(**kw)
            if clients is not None:
                clients[key] = client
    return LLMJudge(
        name=name,
        definition=defn,
        client=client,
        cache=cache,
        owns_client=owns,
        progress=context.progress,
    )


def is_code_judge(type_name: str) -> bool:
    """True for local, registered and plugin judges; False for LLM judge YAMLs (or unknown names)."""
    return type_name in JUDGES


def type_needs_model(type_name: str) -> bool:
    """Whether judges of ``type_name`` score the candidate model itself (``needs_generator``,
    e.g. ``perplexity``, ``lm_eval``), read from the factory's class without building one.
    False for LLM judge YAMLs, unknown names and factories that are not a class's method."""
    return _class_flag(type_name, "needs_generator", False)
