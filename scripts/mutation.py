"""Mutation testing with cosmic-ray: does each module's test suite fail when the code breaks?

Run by ``scripts/mutation.sh`` (which creates ``.venv-mutation`` with cosmic-ray); not
part of CI. For each module below, in a copy of the working tree (the mutants never touch
the checkout): ``cosmic-ray init`` lists every mutant, ``baseline`` checks that the tests
pass unmutated, ``exec`` runs the module's tests once per mutant. Prints one JSON line per
module::

    {"module": "judge_parse", "path": "evomerge/judge/_parse.py", "mutants": 136,
     "run": 136, "killed": 130, "survived": 6, "incompetent": 0, "kill_rate": 0.956,
     "seconds": 840.2, "survivors": ["evomerge/judge/_parse.py:41 ReplaceComparisonOperator_Lt_LtE", ...]}

``--sample N`` runs a random N of a module's mutants (seeded; the rest are marked
skipped), for modules whose full run takes hours; ``kill_rate`` is then the sample's.

Survivors inside function annotations (``int | None`` mutated to ``int + None``) are
listed apart as ``equivalent_annotations``: every module here starts with ``from
__future__ import annotations``, so those annotations are never evaluated (pydantic
models, which do evaluate theirs, are not counted there). ``kill_rate_effective`` leaves
them out. ``--classify FILE`` re-reads such JSON lines and adds that split.

``--recheck DIR`` (a working copy kept with ``--keep``) runs the real survivors again after
tests were added: it copies the current tree's tracked files into ``DIR``, forgets the
results of the survivors that are not annotation-only, re-runs just those with the
module's current test command, and prints the new tally.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parents[1]
PYTEST = f"{ROOT / '.venv' / 'bin' / 'python'} -m pytest -x -q -p no:cacheprovider"

# name -> (module path, the tests that must catch its mutants, per-mutant timeout in s)
MODULES: dict[str, tuple[str, str, float]] = {
    "judge_parse": ("evomerge/judge/_parse.py", "tests/judge/test_parse.py", 120.0),
    "judge_cache": (
        "evomerge/judge/_cache.py",
        "tests/judge/test_cache.py tests/judge/test_llm_judge.py",
        240.0,
    ),
    "search_driver": ("evomerge/search/_driver.py", "tests/search/test_driver_loop.py", 300.0),
    "run": (
        "evomerge/run",
        "tests/run tests/search/test_study.py",
        400.0,
    ),
    "merge_methods": (
        "evomerge/merge/methods",
        # quick files first: -x stops at the first failure
        "tests/merge/test_topk.py tests/merge/test_resolve.py tests/merge/test_parity_methods.py"
        " tests/merge/test_random_masks.py tests/merge/test_methods.py tests/merge/test_fused.py",
        600.0,
    ),
}


def _copy_tree(dest: Path) -> None:
    """The working tree's tracked files (with uncommitted changes) into ``dest``."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout.split(b"\0")
    for raw in files:
        if not raw:
            continue
        rel = Path(raw.decode())
        src = ROOT / rel
        if src.is_file() or src.is_symlink():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).unlink(missing_ok=True)  # a recheck copies over an earlier copy
            shutil.copy2(src, dest / rel, follow_symlinks=False)


def _cosmic(*args: str, cwd: Path) -> None:
    exe = Path(sys.executable).with_name("cosmic-ray")
    subprocess.run([str(exe), *args], cwd=cwd, check=True)


def _sample(db: Path, n: int, seed: int) -> None:
    """Mark all but a random ``n`` of the session's mutants as skipped."""
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import WorkerOutcome, WorkResult

    with use_db(str(db), WorkDB.Mode.open) as work_db:
        ids = sorted(item.job_id for item in work_db.pending_work_items)
        keep = set(random.Random(seed).sample(ids, min(n, len(ids))))
        skipped = WorkResult(worker_outcome=WorkerOutcome.SKIPPED, output="not sampled")
        work_db.set_multiple_results([i for i in ids if i not in keep], skipped)


def _label(m: Any, root: Path) -> str:
    """``path:line Operator`` of one mutation."""
    path = Path(m.module_path)
    rel = path.relative_to(root) if path.is_absolute() else path
    return f"{rel}:{m.start_pos[0]} {m.operator_name.removeprefix('core/')}"


def _tally(db: Path, root: Path) -> dict[str, object]:
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome, WorkerOutcome

    with use_db(str(db), WorkDB.Mode.open) as work_db:
        items = {item.job_id: item for item in work_db.work_items}
        results = dict(work_db.results)
    counts = {"killed": 0, "survived": 0, "incompetent": 0, "skipped": 0, "error": 0}
    survivors = []
    for job_id, result in results.items():
        if result.worker_outcome == WorkerOutcome.SKIPPED:
            counts["skipped"] += 1
        elif result.worker_outcome != WorkerOutcome.NORMAL:
            counts["error"] += 1
        elif result.test_outcome == TestOutcome.SURVIVED:
            counts["survived"] += 1
            survivors.append(_label(items[job_id].mutations[0], root))
        elif result.test_outcome == TestOutcome.INCOMPETENT:
            counts["incompetent"] += 1
        else:
            counts["killed"] += 1
    judged = counts["killed"] + counts["survived"]
    return {
        "mutants": len(items),
        "run": len(items) - counts["skipped"],
        **counts,
        "kill_rate": round(counts["killed"] / judged, 4) if judged else None,
        "survivors": sorted(survivors),
    }


def _annotation_lines(path: Path) -> set[int]:
    """Lines of function-signature annotations in ``path`` (never evaluated at runtime)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if not any(
        isinstance(n, ast.ImportFrom)
        and n.module == "__future__"
        and any(a.name == "annotations" for a in n.names)
        for n in tree.body
    ):
        return set()
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args
            annotations = [a.annotation for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
            annotations += [a.annotation for a in (args.vararg, args.kwarg) if a is not None]
            annotations.append(node.returns)
            for ann in annotations:
                if ann is not None:
                    lines.update(range(ann.lineno, (ann.end_lineno or ann.lineno) + 1))
    return lines


def classify(result: dict[str, object], root: Path = ROOT) -> dict[str, object]:
    """Split ``result["survivors"]`` into real survivors and annotation-only mutants."""
    real: list[str] = []
    equivalent: list[str] = []
    cache: dict[str, set[int]] = {}
    for entry in cast("list[str]", result.get("survivors", [])):
        where, op = str(entry).split(" ", 1)
        file, line = where.rsplit(":", 1)
        if file not in cache:
            cache[file] = _annotation_lines(root / file)
        is_annotation = int(line) in cache[file] and op.startswith("ReplaceBinaryOperator_BitOr")
        (equivalent if is_annotation else real).append(entry)
    killed = int(result["killed"])  # type: ignore[call-overload]
    judged = killed + len(real)
    return {
        **result,
        "survivors": real,
        "equivalent_annotations": equivalent,
        "kill_rate_effective": round(killed / judged, 4) if judged else None,
    }


def _write_config(work: Path, name: str) -> Path:
    path, tests, timeout = MODULES[name]
    config = work / "cosmic-ray.toml"
    config.write_text(
        "[cosmic-ray]\n"
        f'module-path = "{path}"\n'
        f"timeout = {timeout}\n"
        "excluded-modules = []\n"
        f'test-command = "{PYTEST} {tests}"\n'
        "[cosmic-ray.distributor]\n"
        'name = "local"\n',
        encoding="utf-8",
    )
    return config


def run_module(name: str, *, sample: int | None, seed: int, keep: bool) -> dict[str, object]:
    path, tests, _ = MODULES[name]
    work = Path(tempfile.mkdtemp(prefix=f"evomut-{name}-"))
    started = time.monotonic()
    try:
        _copy_tree(work)
        (work / ".cache-evomerge").mkdir()
        os.environ["EVOMERGE_CACHE"] = str(work / ".cache-evomerge")
        config = _write_config(work, name)
        db = work / "session.sqlite"
        _cosmic("init", str(config), str(db), cwd=work)
        if sample is not None:
            _sample(db, sample, seed)
        _cosmic("baseline", str(config), cwd=work)
        _cosmic("exec", str(config), str(db), cwd=work)
        out = classify({"module": name, "path": path, "tests": tests, **_tally(db, work)}, work)
        if sample is not None:
            out["sample_seed"] = seed
        out["seconds"] = round(time.monotonic() - started, 1)
        return out
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def recheck(work: Path) -> dict[str, object]:
    """Run the real survivors of the kept working copy ``work`` again with the current
    tests (see the module docstring)."""
    config_text = (work / "cosmic-ray.toml").read_text(encoding="utf-8")
    name = next(n for n, (path, _, _) in MODULES.items() if f'"{path}"' in config_text)
    path, tests, _ = MODULES[name]
    db = work / "session.sqlite"
    before = classify({"module": name, **_tally(db, work)}, work)
    again = set(cast("list[str]", before["survivors"]))
    from cosmic_ray.work_db import WorkDB, use_db
    from cosmic_ray.work_item import TestOutcome

    with use_db(str(db), WorkDB.Mode.open) as work_db:
        items = {item.job_id: item for item in work_db.work_items}
        jobs = [
            job_id
            for job_id, r in work_db.results
            if r.test_outcome == TestOutcome.SURVIVED
            and _label(items[job_id].mutations[0], work) in again
        ]
    with sqlite3.connect(db) as conn:
        conn.executemany("DELETE FROM work_results WHERE job_id = ?", [(j,) for j in jobs])
    started = time.monotonic()
    _copy_tree(work)
    os.environ["EVOMERGE_CACHE"] = str(work / ".cache-evomerge")
    config = _write_config(work, name)
    _cosmic("exec", str(config), str(db), cwd=work)
    out = classify({"module": name, "path": path, "tests": tests, **_tally(db, work)}, work)
    out["rechecked"] = len(jobs)
    out["seconds"] = round(time.monotonic() - started, 1)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("modules", nargs="*", help=f"default: all of {', '.join(MODULES)}")
    p.add_argument("--sample", type=int, default=None, help="run a random N mutants per module")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="keep the working copies (for cr-report)")
    p.add_argument("--classify", type=Path, help="re-read JSON lines and split the survivors")
    p.add_argument("--recheck", type=Path, help="re-run a kept copy's survivors (see above)")
    args = p.parse_args()
    if args.recheck is not None:
        print(json.dumps(recheck(args.recheck)))
        return
    if args.classify is not None:
        for line in args.classify.read_text(encoding="utf-8").splitlines():
            if line.strip():
                print(json.dumps(classify(json.loads(line))))
        return
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        p.error(f"unknown module(s) {unknown}; choose from {', '.join(MODULES)}")
    for name in args.modules or list(MODULES):
        print(json.dumps(run_module(name, sample=args.sample, seed=args.seed, keep=args.keep)))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
