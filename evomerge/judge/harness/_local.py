"""Which harness tasks may run here: names that exist, data that is local, metrics built in.

evomerge never lets the harness download: a task whose data would come from the Hugging
Face Hub (or a URL), or whose metric the harness would fetch from the ``evaluate`` hub,
is refused before anything is built, with a message saying how to define it locally.
These checks read the task index's raw configs (functions unresolved); nothing here
imports task code or loads data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["DEFINE_LOCALLY", "PACKAGED_BUILDERS", "harness_builtin", "leaf_configs", "problems"]

#: ``datasets`` builders that read local files given in ``data_files`` (no download).
PACKAGED_BUILDERS = ("json", "csv", "parquet", "text", "arrow", "pandas")

DEFINE_LOCALLY = (
    "define it locally: a task YAML in a folder listed in the judge's tasks_dirs, with "
    "`custom_dataset: !function evomerge.judge.harness.local_files` and "
    "`dataset_kwargs: {data_files: {test: my_task.test.jsonl}}` (files next to the YAML), or "
    "`dataset_path: json` with absolute data_files; evomerge/data/lm_eval_tasks/ has examples"
)


def leaf_configs(
    names: Iterable[str], index: Mapping[str, Any]
) -> list[tuple[str, dict[str, Any], Path | None]]:
    """(task name, raw config, YAML path) of every task that ``names`` expand to.

    Groups expand to their members (names in the index, or inline task dicts), tags to
    their tasks. Unknown member names are left to the harness to report.
    """
    out: list[tuple[str, dict[str, Any], Path | None]] = []
    seen: set[str] = set()

    def visit(name: str, overrides: Mapping[str, Any] | None = None) -> None:
        entry = index.get(name)
        if entry is None or name in seen:
            return
        seen.add(name)
        cfg = dict(entry.cfg or {})
        if entry.cfg is None and entry.tags:  # a tag: just a list of task names
            for member in sorted(entry.tags):
                visit(member)
            return
        if "group" in cfg:
            for member in cfg.get("task") or []:
                if isinstance(member, str):
                    visit(member)
                elif isinstance(member, Mapping) and isinstance(member.get("task"), str):
                    if member["task"] in index:
                        visit(member["task"], member)
                    else:  # an inline task defined inside the group
                        out.append((f"{name}::{member['task']}", dict(member), entry.yaml_path))
            return
        out.append((name, {**cfg, **dict(overrides or {})}, entry.yaml_path))

    for n in names:
        visit(n)
    return out


def _data_files(kwargs: Mapping[str, Any]) -> list[str]:
    files = kwargs.get("data_files")
    if files is None:
        return []
    if isinstance(files, str):
        return [files]
    if isinstance(files, Mapping):
        flat: list[str] = []
        for v in files.values():
            flat += [v] if isinstance(v, str) else [str(x) for x in v]
        return flat
    return [str(x) for x in files]


def _remote(path: str) -> bool:
    return "://" in path or path.startswith("hf:")


def _data_problem(name: str, cfg: Mapping[str, Any], where: str) -> str | None:
    if cfg.get("custom_dataset") is not None or "class" in cfg:
        return None  # the task's own (local) code loads its data
    path = cfg.get("dataset_path")
    kwargs = cfg.get("dataset_kwargs") or {}
    if path is None:
        return f"task {name!r} ({where}) names no data (dataset_path or custom_dataset); {DEFINE_LOCALLY}"
    if path in PACKAGED_BUILDERS:
        files = _data_files(kwargs)
        if not files:
            return f"task {name!r} ({where}): dataset_path {path!r} needs dataset_kwargs.data_files"
        base = Path(kwargs.get("data_dir") or ".")
        for f in files:
            if _remote(f):
                return f"task {name!r} ({where}) would download {f!r}; {DEFINE_LOCALLY}"
            p = Path(f).expanduser()
            if not (p if p.is_absolute() else base / p).exists():
                return (
                    f"task {name!r} ({where}): data file {f!r} not found (the harness resolves "
                    f"relative data_files against the working directory {Path.cwd()}); write an absolute "
                    "path, or use custom_dataset evomerge.judge.harness.local_files, which resolves "
                    "them against the YAML's folder"
                )
        return None
    if not _remote(str(path)) and Path(str(path)).expanduser().is_dir():
        return None  # a local dataset folder
    shown = f"{path}/{cfg['dataset_name']}" if cfg.get("dataset_name") else str(path)
    return (
        f"task {name!r} ({where}) would download the dataset {shown!r} from the Hugging Face Hub; "
        f"evomerge never downloads data: {DEFINE_LOCALLY}"
    )


def _metric_problem(name: str, cfg: Mapping[str, Any], where: str) -> str | None:
    from lm_eval.api.registry import metric_registry

    if cfg.get("process_results") is not None:
        return None
    for m in cfg.get("metric_list") or []:
        metric = m.get("metric") if isinstance(m, Mapping) else None
        if not isinstance(metric, str):
            continue
        if m.get("hf_evaluate") or metric not in metric_registry:
            return (
                f"task {name!r} ({where}): metric {metric!r} is not built into lm-eval, so the harness "
                "would fetch it from the Hugging Face `evaluate` hub; use a built-in metric "
                "(acc, acc_norm, exact_match, bleu, chrf, ter, ...) or a local process_results function"
            )
    return None


def problems(names: Iterable[str], index: Mapping[str, Any]) -> list[str]:
    """Every reason the tasks ``names`` expand to cannot run offline (empty: all fine)."""
    out = []
    for leaf, cfg, yaml_path in leaf_configs(names, index):
        where = str(yaml_path) if yaml_path else "inline"
        for check in (_data_problem, _metric_problem):
            msg = check(leaf, cfg, where)
            if msg:
                out.append(msg)
    return out


def harness_builtin(name: str) -> bool:
    """Whether ``name`` is one of lm-eval's own tasks, groups or tags (a text scan of its task
    folder: indexing it properly takes the harness most of a minute)."""
    import lm_eval.tasks

    root = Path(lm_eval.tasks.__file__).parent
    pattern = re.compile(
        rf"^\s*(?:task|group|tag)\s*:\s*['\"]?{re.escape(name)}['\"]?\s*$|^\s*-\s*['\"]?{re.escape(name)}['\"]?\s*$",
        re.MULTILINE,
    )
    for path in root.rglob("*.yaml"):
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if name in text and pattern.search(text):
            return True
    return False
