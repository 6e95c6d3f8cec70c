"""Every error evomerge raises on purpose, in one tree.

::

    EvomergeError                      base of everything below
    ├── ConfigError                    a YAML/JSON config is wrong (names file and field)
    │   └── UnknownPluginError         a name no registry knows (lists the choices)
    ├── CheckpointError                a model directory cannot be opened as asked
    │   └── UnsafeCheckpointError      pickle weights (.bin/.pt) without allow_pickle=True
    ├── ArchitectureMismatchError      models differ: names the first differing tensor
    ├── MergeError                     a merge cannot be computed as configured
    │   ├── UnknownMethodError         a merge method name not in the registry (also an
    │   │                              UnknownPluginError)
    │   └── MemoryBudgetError          the merge engine would not fit on its device
    ├── SearchError                    the study or driver cannot proceed
    ├── GenerationError                a generator backend failed
    │   └── GeneratorDeadError         the backend itself is gone (engine died, CUDA
    │                                  context lost): also an InfrastructureError
    ├── JudgeError                     a judge failed to score (one trial, never the study)
    │   ├── JudgeAuthError             the endpoint refused the credentials (401/403):
    │   │                              also an InfrastructureError
    │   ├── JudgeUnavailableError      the endpoint is unreachable, answers 5xx or times
    │   │                              out on every request, or has no such model (404):
    │   │                              also an InfrastructureError
    │   └── RequestFailed              one judge request failed for good (retries spent)
    ├── ExportError                    a checkpoint could not be written
    ├── WriteError                     a full disk, a read-only file system or a missing
    │                                  permission: one line naming the path and what to
    │                                  do (also an OSError, with its errno)
    └── InfrastructureError            something outside the candidate failed, so every
                                       trial would fail the same way; the search stops
                                       after ``search.stop_after_infra_failures`` in a row

:func:`is_infrastructure` tells such a failure from a candidate's own (it also counts
Python's ``ConnectionError``, e.g. from a plug-in judge).

Errors are ``ValueError`` subclasses where the cause is bad input, so that pydantic
validators can raise them and have them reported with the field they belong to.
"""

from __future__ import annotations

__all__ = [
    "ArchitectureMismatchError",
    "CheckpointError",
    "ConfigError",
    "EvomergeError",
    "ExportError",
    "GenerationError",
    "GeneratorDeadError",
    "InfrastructureError",
    "JudgeAuthError",
    "JudgeError",
    "JudgeUnavailableError",
    "MemoryBudgetError",
    "MergeError",
    "RequestFailed",
    "SearchError",
    "UnknownMethodError",
    "UnknownPluginError",
    "UnsafeCheckpointError",
    "WriteError",
    "is_infrastructure",
]


class EvomergeError(Exception):
    """Base class of every error evomerge raises on purpose."""


class ConfigError(EvomergeError, ValueError):
    """A configuration file is invalid. The message names the file and every bad field."""


class UnknownPluginError(ConfigError, KeyError):
    """A name that no registry entry, registered plug-in or entry point has. The message
    lists the choices."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(EvomergeError, ValueError):
    """A model directory is missing, incomplete or in an unsupported format."""


class UnsafeCheckpointError(CheckpointError):
    """Only pickle weights were found and the user did not opt in with ``allow_pickle``."""


class ArchitectureMismatchError(EvomergeError, ValueError):
    """Models in a pool do not share tensor names and shapes."""


class MergeError(EvomergeError, ValueError):
    """A merge cannot be computed with the given method and parameters."""


class UnknownMethodError(MergeError, UnknownPluginError):
    """A merge method name that is not registered. The message lists the choices."""


class MemoryBudgetError(MergeError):
    """The merge engine's resident tensors would exceed the device budget."""


class SearchError(EvomergeError):
    """The study or the driver cannot proceed."""


class GenerationError(EvomergeError):
    """A generation backend failed."""


class JudgeError(EvomergeError):
    """A judge could not score; fails one trial, never the study."""


class WriteError(EvomergeError, OSError):
    """A file or folder could not be written: the disk is full, the file system read-only,
    or permission denied. The message names the path and what to do; ``errno`` and
    ``filename`` are set as on the OSError it replaces."""

    def __str__(self) -> str:  # the message alone, without OSError's "[Errno 28]"
        return str(self.strerror if self.strerror is not None else self.args[0])


class InfrastructureError(EvomergeError):
    """Something outside the candidate failed (a judge endpoint, a generator engine): the
    next trials would fail the same way, so the search stops instead of spending them."""


class GeneratorDeadError(GenerationError, InfrastructureError):
    """The generation backend is gone (its engine process died, the CUDA context is lost)."""


class JudgeAuthError(JudgeError, InfrastructureError):
    """The judge endpoint refused the credentials; retrying cannot help."""


class JudgeUnavailableError(JudgeError, InfrastructureError):
    """The judge endpoint answered no request: unreachable, 5xx or timeouts after every
    retry, or no such model/path (404)."""


class RequestFailed(JudgeError):
    """One judge request failed for good (retries exhausted, or a 4xx that retrying cannot fix).

    ``transient`` is True when every attempt failed for a reason that is not the request's
    own (connection error, timeout, 408/409/429/5xx): the endpoint may be down."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def is_infrastructure(err: BaseException) -> bool:
    """True when ``err`` (or an exception it was raised from) is an InfrastructureError or
    a ConnectionError: a failure of the machinery, not of the candidate being scored."""
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        if isinstance(e, (InfrastructureError, ConnectionError)):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


class ExportError(EvomergeError):
    """A checkpoint or report could not be written."""
