"""evomerge.registry.Registry: one plug-in mechanism for merge methods, judges, generators
and evaluators (built-ins, register(), entry points, one error listing the choices)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from evomerge.exceptions import ConfigError, UnknownMethodError, UnknownPluginError
from evomerge.registry import Registry


def _check(name: str, obj: object) -> int:
    if not isinstance(obj, int):
        raise TypeError(f"{name} must be an int")
    return obj


def _installed_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, group: str, lines: str
) -> None:
    """A real installed distribution on sys.path, found by importlib.metadata."""
    dist = tmp_path / "evo_reg_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: evo-reg-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{group}]\n{lines}")
    (tmp_path / "evo_reg_plugin_mod.py").write_text("SEVEN = 7\nWORD = 'seven'\nBUILTIN = 99\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "evo_reg_plugin_mod", raising=False)


def test_lookup_order_and_one_error_listing_every_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = "evomerge.test_registry"
    _installed_plugin(
        tmp_path,
        monkeypatch,
        group,
        "seven = evo_reg_plugin_mod:SEVEN\none = evo_reg_plugin_mod:BUILTIN\n"
        "word = evo_reg_plugin_mod:WORD\ngone = evo_reg_plugin_missing:X\n",
    )
    builtins = {"one": 1, "two": 2}
    reg: Registry[int] = Registry("number", builtins=builtins, group=group, check=_check)
    assert reg.names() == ["one", "two", "gone", "seven", "word"]  # built-ins first, in order
    assert "evo_reg_plugin_mod" not in sys.modules  # listing loads no plug-in
    assert reg.get("one") == 1  # a plug-in cannot shadow a built-in
    assert reg.get("seven") == 7 and "seven" in reg
    with pytest.raises(ConfigError, match=r"number 'word' is a plug-in .*must be an int"):
        reg.get("word")  # an invalid plug-in fails its own name, clearly
    with pytest.raises(ConfigError, match=r"number 'gone' is a plug-in .*ModuleNotFoundError"):
        reg.get("gone")
    with pytest.raises(
        UnknownPluginError, match=r"^Unknown number 'tree'\. Available: one, two, gone"
    ):
        reg.get("tree")
    assert reg.origins()["seven"] == "plugin evo_reg_plugin_mod:SEVEN"
    assert reg.origins()["one"] == "built-in"


def test_register_replace_and_unregister() -> None:
    reg: Registry[int] = Registry("number", builtins={"one": 1})
    reg.register("three", 3)
    with pytest.raises(ValueError, match="'three' is already registered; pass replace=True"):
        reg.register("three", 33)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("one", 11)
    reg.register("one", 11, replace=True)  # explicit: the caller asked for it
    assert reg.get("one") == 11 and reg.names() == ["one", "three"]
    reg.unregister("one")
    reg.unregister("three")
    assert reg.get("one") == 1 and reg.find("three") is None
    checked: Registry[int] = Registry("number", builtins={}, check=_check)
    with pytest.raises(TypeError, match="must be an int"):
        checked.register("x", "not a number")  # type: ignore[arg-type]


def test_each_kind_of_plugin_uses_the_registry() -> None:
    from evomerge.generate import GENERATORS, get_generator_factory
    from evomerge.judge import JUDGES, build_judge
    from evomerge.merge import MERGE_METHODS, get_method
    from evomerge.search import EVALUATORS, get_evaluator_factory

    for reg in (GENERATORS, JUDGES, MERGE_METHODS, EVALUATORS):
        assert isinstance(reg, Registry)
    with pytest.raises(UnknownMethodError, match=r"Unknown merge method 'tie'\. Available: linear"):
        get_method("tie")
    with pytest.raises(
        UnknownPluginError, match=r"Unknown generation backend 'hff'\. Available: hf"
    ):
        get_generator_factory("hff")
    with pytest.raises(UnknownPluginError, match=r"Unknown judge 'lenght'\. Available: .*length"):
        build_judge("lenght")
    with pytest.raises(ConfigError, match=r"evaluator\.factory: Unknown evaluator 'pipelin'"):
        get_evaluator_factory("pipelin")
    assert get_evaluator_factory("pipeline") is EVALUATORS.get("pipeline")
