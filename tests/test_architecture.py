"""The one-way import order written down in ARCHITECTURE.md, checked on every import.

Every ``import``/``from ... import`` in ``evomerge/`` is read from the source (module
level, inside functions and under ``TYPE_CHECKING`` alike): a package imports only lower
layers and itself, never another package's private modules, and nothing reads private
attributes of other objects. Each package also imports alone in a fresh interpreter.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import evomerge

ROOT = Path(evomerge.__file__).parent
DOC = ROOT.parent / "ARCHITECTURE.md"

# Private attributes of other objects that are fine, with why.
PRIVATE_ATTRIBUTE_ALLOWED = {
    ("config.py", "cfg._with_absolute_paths"),  # RunConfig's own method, in its own class
    ("testing/openai_server.py", "self.server.fake._handle"),  # the fake server's own class
    ("testing/search.py", "os._exit"),  # the documented way to kill a process at once
    ("interrupt.py", "os._exit"),  # a third signal forces the exit, clean-up or not
    # lm-eval's TemplateLM declares these for its subclasses to implement and extend
    ("judge/harness/_hflm.py", "super()._loglikelihood_tokens"),
    ("judge/harness/_hflm.py", "super()._encode_pair"),
}
# Private modules of third-party packages that may be imported, with why.
THIRD_PARTY_PRIVATE_ALLOWED = {
    # Ray's token set-up for joining a cluster, imported under try/except ImportError
    "ray._private.authentication.authentication_token_setup",
    # torch.compile's recompile limit, and its compile/backend error classes (the fused
    # kernel catches exactly those), exist only in these modules
    "torch._dynamo.config",
    "torch._dynamo.exc",
    "torch._inductor.exc",
}


def _layers() -> dict[str, int]:
    """Package -> layer, read from the table in ARCHITECTURE.md (the document is the rule)."""
    layers: dict[str, int] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\|\s*(\d+)\s*\|([^|]+)\|", line)
        if m:
            for name in re.findall(r"`([\w.]+)`", m.group(2)):
                layers[name] = int(m.group(1))
    return layers


LAYERS = _layers()


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _package(module: str) -> str | None:
    """``evomerge.search._driver`` -> ``search``; None for the root ``evomerge`` itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every import in ``path``, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            out.append((node.lineno, base))
            # `from evomerge import atomic` / `from evomerge.run import attrs` name modules
            for a in node.names:
                candidate = f"{base}.{a.name}"
                if (ROOT.parent / candidate.replace(".", "/")).with_suffix(".py").exists() or (
                    ROOT.parent / candidate.replace(".", "/") / "__init__.py"
                ).exists():
                    out.append((node.lineno, candidate))
    return out


SOURCES = sorted(ROOT.rglob("*.py"))


def test_the_document_names_every_package() -> None:
    packages = {_package(_module_name(p)) for p in SOURCES} - {None}
    assert packages == set(LAYERS), (
        f"ARCHITECTURE.md must place every package: {packages ^ set(LAYERS)}"
    )


def test_imports_flow_one_way_and_stay_out_of_private_modules() -> None:
    problems = []
    for path in SOURCES:
        me = _module_name(path)
        mine = _package(me)
        for line, target in _imports(path):
            if not target.startswith("evomerge.") or mine is None:
                continue
            theirs = _package(target)
            where = f"{path.relative_to(ROOT.parent)}:{line}: imports {target}"
            if theirs is None or theirs == mine:
                continue
            if LAYERS[theirs] >= LAYERS[mine]:
                problems.append(
                    f"{where} (layer {LAYERS[theirs]} from layer {LAYERS[mine]} {mine})"
                )
            private = [p for p in target.split(".")[2:] if p.startswith("_")]
            if private and not theirs.startswith("_"):
                problems.append(f"{where} (a private module of {theirs})")
    assert not problems, "\n".join(problems)


def test_no_private_attributes_of_other_objects() -> None:
    problems = []
    for path in SOURCES:
        rel = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Attribute) and re.match(r"^_[^_]", node.attr)):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            text = ast.unparse(node)
            if (rel, text) not in PRIVATE_ATTRIBUTE_ALLOWED:
                problems.append(f"{rel}:{node.lineno}: {text}")
        for line, target in _imports(path):
            third_party = not target.startswith("evomerge")
            private = any(p.startswith("_") for p in target.split(".")[1:])
            if third_party and private and target not in THIRD_PARTY_PRIVATE_ALLOWED:
                problems.append(f"{rel}:{line}: imports the private module {target}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_each_package_imports_alone(package: str) -> None:
    """A fresh interpreter imports the package alone (no cycle hidden by import order)."""
    subprocess.run([sys.executable, "-c", f"import evomerge.{package}"], check=True, timeout=300)


def test_config_imports_without_torch() -> None:
    code = "import sys, evomerge.config; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
