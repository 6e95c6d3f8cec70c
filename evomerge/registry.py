"""Registry: named plug-ins of one kind (merge methods, judges, generators, evaluators).

A name is looked up in this order:

1. the built-ins, an explicit mapping given at construction (nothing registers itself by
   being imported);
2. entries added in this process with :meth:`Registry.register`;
3. entry points of the registry's group (``[project.entry-points."evomerge.judges"]``),
   each loaded on its first lookup only, so a broken plug-in breaks only its own name.

A built-in cannot be replaced by an entry point (the entry point is ignored with a
warning) and only with ``replace=True`` by :meth:`register`. An unknown name raises one
error type, :class:`~evomerge.exceptions.UnknownPluginError` (or the subclass the registry
was given), whose message lists every available name::

    Unknown judge 'lenght'. Available: bleu, chrf, fact_recall, length, ...

Thread safety: lookups may run from several threads; :meth:`register` is meant for set-up.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Generic, TypeVar

from evomerge.exceptions import ConfigError, UnknownPluginError

logger = logging.getLogger(__name__)

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Named plug-ins of one ``kind``.

    ``builtins``: the shipped entries (kept by reference: a dict literal stays the single
    list of built-ins). ``group``: the entry-point group, or None for no plug-ins.
    ``check(name, obj) -> T``: validates a registered or loaded object and returns it (it
    raises TypeError/ValueError for a bad one). ``error``: the exception class raised for
    an unknown name. ``hint``: appended to that message (e.g. how to add one).
    """

    def __init__(
        self,
        kind: str,
        *,
        builtins: Mapping[str, T],
        group: str | None = None,
        check: Callable[[str, object], T] | None = None,
        error: type[UnknownPluginError] = UnknownPluginError,
        hint: str = "",
    ) -> None:
        self.kind = kind
        self.group = group
        self._builtins = builtins
        self._check = check
        self._error = error
        self._hint = hint
        self._registered: dict[str, T] = {}
        self._loaded: dict[str, T] = {}
        self._lock = threading.Lock()
        self._warned: set[str] = set()

    # -- adding -----------------------------------------------------------------------

    def register(self, name: str, obj: T, *, replace: bool = False) -> None:
        """Make ``name`` resolve to ``obj`` in this process.

        Raises ValueError when ``name`` is taken (a built-in, registered or plug-in name)
        unless ``replace=True``, or when ``check`` rejects ``obj``.
        """
        if not replace and name in self:
            raise ValueError(
                f"{self.kind} {name!r} is already registered; pass replace=True to override it"
            )
        value = self._validate(name, obj)
        with self._lock:
            self._registered[name] = value
            self._loaded.pop(name, None)

    def unregister(self, name: str) -> None:
        """Remove a name added with :meth:`register` (built-ins stay)."""
        with self._lock:
            self._registered.pop(name, None)

    # -- looking up -------------------------------------------------------------------

    def _entry_points(self) -> dict[str, EntryPoint]:
        if self.group is None:
            return {}
        return {ep.name: ep for ep in entry_points(group=self.group)}

    def _validate(self, name: str, obj: object) -> T:
        if self._check is None:
            return obj  # type: ignore[return-value]
        return self._check(name, obj)

    def find(self, name: str) -> T | None:
        """The entry called ``name``, or None when there is none.

        Raises ConfigError when ``name`` is a plug-in that cannot be loaded or is invalid.
        """
        if name in self._registered:
            return self._registered[name]
        if name in self._builtins:
            return self._builtins[name]
        with self._lock:
            if name in self._loaded:
                return self._loaded[name]
        ep = self._entry_points().get(name)
        if ep is None:
            return None
        try:
            value = self._validate(name, ep.load())
        except Exception as err:
            raise ConfigError(
                f"{self.kind} {name!r} is a plug-in ({self.group}: {ep.value}) that cannot be "
                f"loaded: {type(err).__name__}: {err}"
            ) from err
        with self._lock:
            self._loaded[name] = value
        return value

    def get(self, name: str, *, more: Iterable[str] = ()) -> T:
        """The entry called ``name``; :meth:`unknown` is raised when there is none."""
        value = self.find(name)
        if value is None:
            raise self.unknown(name, more=more)
        return value

    def unknown(self, name: str, *, more: Iterable[str] = ()) -> UnknownPluginError:
        """The error for an unknown ``name``, listing every name (plus ``more``)."""
        choices = sorted({*self.names(), *more}) if more else self.names()
        hint = f" {self._hint}" if self._hint else ""
        return self._error(
            f"Unknown {self.kind} {name!r}. Available: {', '.join(choices) or '(none)'}.{hint}"
        )

    def names(self) -> list[str]:
        """Every name: built-ins in their order, then registered ones, then plug-ins (sorted)."""
        out = list(self._builtins)
        out += [n for n in self._registered if n not in self._builtins]
        seen = set(out)
        for n in sorted(self._entry_points()):
            if n in self._builtins:
                if n in self._warned:
                    continue
                self._warned.add(n)
                logger.warning(
                    "ignoring plug-in %s %r (%s): a built-in has that name",
                    self.kind,
                    n,
                    self.group,
                )
            elif n not in seen:
                out.append(n)
        return out

    def origins(self) -> dict[str, str]:
        """Name -> where it comes from: ``built-in``, ``registered`` or ``plugin <module:obj>``."""
        eps = self._entry_points()
        out: dict[str, str] = {}
        for n in self.names():
            if n in self._registered:
                out[n] = "registered"
            elif n in self._builtins:
                out[n] = "built-in"
            else:
                out[n] = f"plugin {eps[n].value}"
        return out

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        return name in self._builtins or name in self._registered or name in self._entry_points()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self.names())} entries)"
