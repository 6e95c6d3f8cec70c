"""FakeJudge: a judge with scripted scores, for tests of the objective, the worker and the driver."""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from evomerge.judge import Sample, Score

__all__ = ["FakeJudge"]


class FakeJudge:
    """Scores from a script: ``fn(sample) -> float`` or ``values`` used in order, cycling.

    A NaN value becomes a NaN Score with ``error="scripted NaN"``. ``raises`` makes every
    call raise that exception (e.g. ``JudgeAuthError``). With ``needs_generator=True`` it
    must be called with ``generator=`` and ``fn`` may take ``(sample, generator)``.
    ``calls`` records the samples of every call and ``generators`` the generators seen.
    Thread-safe.
    """

    def __init__(
        self,
        *,
        name: str = "fake",
        fn: Callable[..., float] | None = None,
        values: Iterable[float] | None = None,
        raises: BaseException | None = None,
        needs_generator: bool = False,
    ) -> None:
        if fn is not None and values is not None:
            raise ValueError("FakeJudge: give fn or values, not both")
        if fn is None and values is None:
            values = [1.0]
        self.name = name
        self.needs_generator = needs_generator
        self._fn = fn
        vals = list(values) if values is not None else []
        if fn is None and not vals:
            raise ValueError("FakeJudge: values must not be empty")
        self._values = itertools.cycle(vals)
        self._raises = raises
        self._lock = threading.Lock()
        self.calls: list[list[Sample]] = []
        self.generators: list[Any] = []

    def _value(self, sample: Sample, generator: Any) -> float:
        if self._fn is None:
            return float(next(self._values))
        return float(self._fn(sample, generator) if self.needs_generator else self._fn(sample))

    def score(self, samples: Sequence[Sample], *, generator: Any = None) -> list[Score]:
        with self._lock:
            self.calls.append(list(samples))
            self.generators.append(generator)
            if self._raises is not None:
                raise self._raises
            if self.needs_generator and generator is None:
                raise TypeError(f"FakeJudge {self.name!r} needs generator=")
            values = [self._value(s, generator) for s in samples]
        return [
            Score(value=v, raw=f"fake:{v}", error="scripted NaN" if math.isnan(v) else None)
            for v in values
        ]
