"""The merge-method registry: one explicit dict of the built-in methods, plus plugins.

:data:`METHODS` (a dict literal) is the list of built-ins; :data:`MERGE_METHODS` is the
:class:`~evomerge.registry.Registry` over it. Plugins are :class:`MergeMethod` objects
exposed through the ``evomerge.merge_methods`` entry-point group (``name =
"package.module:METHOD"``), loaded on the first lookup of their name, or added with
:func:`register_method`. A plugin cannot replace a built-in method.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType

from evomerge.exceptions import UnknownMethodError
from evomerge.merge.methods._checks import check_della, check_linear, check_sparsify
from evomerge.merge.methods._interp import linear, passthrough, slerp
from evomerge.merge.methods._spec import REQUIRED, BasePolicy, MergeMethod, Need, ParamSpec, Scope
from evomerge.merge.methods._task_arithmetic import (
    ONE_OFF_SKIPS,
    SPARSIFICATION_NEEDS,
    breadcrumbs,
    breadcrumbs_ties,
    dare_linear,
    dare_ties,
    della,
    della_linear,
    task_arithmetic,
    ties,
)
from evomerge.registry import Registry

logger = logging.getLogger(__name__)

__all__ = [
    "ENTRY_POINT_GROUP",
    "MERGE_METHODS",
    "METHODS",
    "get_method",
    "list_methods",
    "register_method",
]

ENTRY_POINT_GROUP = "evomerge.merge_methods"


def _gta_params(
    *, normalize: bool, rescale: bool, extra: tuple[ParamSpec, ...] = ()
) -> tuple[ParamSpec, ...]:
    return (
        ParamSpec("weight", float, Scope.NON_BASE, REQUIRED, "scale of the model's task vector"),
        ParamSpec("density", float, Scope.NON_BASE, 1.0, "fraction of the task vector kept"),
        *extra,
        ParamSpec(
            "normalize", bool, Scope.GLOBAL, normalize, "divide by the sum of (kept) weights"
        ),
        ParamSpec("rescale", bool, Scope.GLOBAL, rescale, "L1-rescale sparsified task vectors"),
        ParamSpec("lambda", float, Scope.GLOBAL, 1.0, "scale of the merged task vector"),
        ParamSpec(
            "int8_mask", bool, Scope.GLOBAL, False, "accepted for mergekit compatibility; no effect"
        ),
    )


_GAMMA = ParamSpec(
    "gamma", float, Scope.NON_BASE, 0.01, "fraction of largest-magnitude outliers dropped"
)
_EPSILON = ParamSpec(
    "epsilon", float, Scope.NON_BASE, 0.15, "spread of keep probabilities by magnitude rank"
)


def _gta(
    name: str,
    fn: object,
    sparsification: str | None,
    *,
    normalize: bool,
    rescale: bool,
    doc: str,
    ref: str,
    extra: tuple[ParamSpec, ...] = (),
) -> MergeMethod:
    check = (
        check_della
        if sparsification == "della_magprune"
        else check_sparsify
        if sparsification
        else None
    )
    return MergeMethod(
        name=name,
        fn=fn,  # type: ignore[arg-type]
        params=_gta_params(normalize=normalize, rescale=rescale, extra=extra),
        base=BasePolicy.REQUIRED,
        needs=SPARSIFICATION_NEEDS[sparsification],
        check=check,
        one_off_skips=ONE_OFF_SKIPS.get(sparsification, frozenset()),
        description=doc,
        reference=ref,
    )


METHODS: Mapping[str, MergeMethod] = MappingProxyType(
    {
        "linear": MergeMethod(
            name="linear",
            fn=linear,
            base=BasePolicy.INPUT,
            check=check_linear,
            params=(
                ParamSpec("weight", float, Scope.INPUT, REQUIRED, "the model's weight"),
                ParamSpec("normalize", bool, Scope.GLOBAL, True, "divide by the sum of weights"),
            ),
            description="Weighted average of the models.",
            reference="https://arxiv.org/abs/2203.05482",
        ),
        "task_arithmetic": _gta(
            "task_arithmetic",
            task_arithmetic,
            None,
            normalize=False,
            rescale=False,
            doc="Base plus weighted task vectors.",
            ref="https://arxiv.org/abs/2212.04089",
        ),
        "ties": _gta(
            "ties",
            ties,
            "magnitude",
            normalize=True,
            rescale=False,
            doc="Trim, elect sign, disjoint merge.",
            ref="https://arxiv.org/abs/2306.01708",
        ),
        "dare_linear": _gta(
            "dare_linear",
            dare_linear,
            "random",
            normalize=False,
            rescale=True,
            doc="Random drop and rescale, weighted sum.",
            ref="https://arxiv.org/abs/2311.03099",
        ),
        "dare_ties": _gta(
            "dare_ties",
            dare_ties,
            "random",
            normalize=False,
            rescale=True,
            doc="Random drop and rescale, TIES sign consensus.",
            ref="https://arxiv.org/abs/2311.03099",
        ),
        "breadcrumbs": _gta(
            "breadcrumbs",
            breadcrumbs,
            "magnitude_outliers",
            normalize=False,
            rescale=False,
            doc="Drop outliers and small values.",
            ref="https://arxiv.org/abs/2312.06795",
            extra=(_GAMMA,),
        ),
        "breadcrumbs_ties": _gta(
            "breadcrumbs_ties",
            breadcrumbs_ties,
            "magnitude_outliers",
            normalize=False,
            rescale=False,
            doc="Breadcrumbs with sign consensus.",
            ref="https://arxiv.org/abs/2312.06795",
            extra=(_GAMMA,),
        ),
        "della": _gta(
            "della",
            della,
            "della_magprune",
            normalize=True,
            rescale=True,
            doc="Magnitude-ranked random drop, sign consensus.",
            ref="https://arxiv.org/abs/2406.11617",
            extra=(_EPSILON,),
        ),
        "della_linear": _gta(
            "della_linear",
            della_linear,
            "della_magprune",
            normalize=False,
            rescale=True,
            doc="Magnitude-ranked random drop, weighted sum.",
            ref="https://arxiv.org/abs/2406.11617",
            extra=(_EPSILON,),
        ),
        "slerp": MergeMethod(
            name="slerp",
            fn=slerp,
            base=BasePolicy.REQUIRED,
            min_inputs=2,
            max_inputs=2,
            needs=frozenset({Need.SLERP_STATS}),
            params=(
                ParamSpec(
                    "t", float, Scope.GLOBAL, REQUIRED, "0 = base model, 1 = the other model"
                ),
            ),
            description="Spherical interpolation of two models.",
            reference="https://en.wikipedia.org/wiki/Slerp",
        ),
        "passthrough": MergeMethod(
            name="passthrough",
            fn=passthrough,
            base=BasePolicy.INPUT,
            max_inputs=1,
            params=(
                ParamSpec("scale", float | None, Scope.INPUT, None, "multiply the tensor by this"),
            ),
            description="Copy one model (optionally scaled).",
        ),
    }
)


def _check_method(name: str, obj: object) -> MergeMethod:
    if not isinstance(obj, MergeMethod):
        raise TypeError(f"merge method {name!r} is a {type(obj).__name__}, not a MergeMethod")
    if obj.name != name:
        raise ValueError(
            f"merge method registered as {name!r} is named {obj.name!r}; make them equal"
        )
    return obj


#: Every merge method: the built-ins (:data:`METHODS`), registered ones, plugins.
MERGE_METHODS: Registry[MergeMethod] = Registry(
    "merge method",
    builtins=METHODS,
    group=ENTRY_POINT_GROUP,
    check=_check_method,
    error=UnknownMethodError,
)


def register_method(method: MergeMethod, *, replace: bool = False) -> None:
    """Make ``method`` available under ``method.name`` in this process."""
    MERGE_METHODS.register(method.name, method, replace=replace)


def list_methods() -> list[str]:
    """Names of every available method: built-ins in registry order, then the others."""
    return MERGE_METHODS.names()


def get_method(name: str) -> MergeMethod:
    """The method called ``name``; raises UnknownMethodError listing the choices."""
    return MERGE_METHODS.get(name)
