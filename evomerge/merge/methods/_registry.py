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
from dataclasses import replace
from types import MappingProxyType

from evomerge.exceptions import UnknownMethodError
from evomerge.merge.methods._checks import check_della, check_linear
from evomerge.merge.methods._interp import linear, passthrough, slerp
from evomerge.merge.methods._pair import arcee_fusion, nearswap
from evomerge.merge.methods._select import ram, ramplus_tl, sce
from evomerge.merge.methods._spec import REQUIRED, BasePolicy, MergeMethod, Need, ParamSpec, Scope
from evomerge.merge.methods._sphere import karcher, model_stock, multislerp, nuslerp
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


_INT8_MASK = ParamSpec(
    "int8_mask", bool, Scope.GLOBAL, False, "accepted for mergekit compatibility; no effect"
)
_RAM_EPSILON = ParamSpec(
    "epsilon", float, Scope.GLOBAL, 1e-5, "a change smaller than this does not count", low=0.0
)
_DENSITY = ParamSpec(
    "density",
    float,
    Scope.NON_BASE,
    1.0,
    "fraction of the task vector kept",
    low=0.0,
    high=1.0,
    search=True,
)


def _gta_params(
    *, normalize: bool, rescale: bool, sparsify: bool, extra: tuple[ParamSpec, ...] = ()
) -> tuple[ParamSpec, ...]:
    return (
        ParamSpec(
            "weight",
            float,
            Scope.NON_BASE,
            REQUIRED,
            "scale of the model's task vector",
            search=True,
        ),
        _DENSITY if sparsify else replace(_DENSITY, search=False),  # no effect without trimming
        *extra,
        ParamSpec(
            "normalize", bool, Scope.GLOBAL, normalize, "divide by the sum of (kept) weights"
        ),
        ParamSpec("rescale", bool, Scope.GLOBAL, rescale, "L1-rescale sparsified task vectors"),
        ParamSpec("lambda", float, Scope.GLOBAL, 1.0, "scale of the merged task vector"),
        _INT8_MASK,
    )


_GAMMA = ParamSpec(
    "gamma",
    float,
    Scope.NON_BASE,
    0.01,
    "fraction of largest-magnitude outliers dropped",
    low=0.0,
    high=1.0,
    search=True,
)
_EPSILON = ParamSpec(
    "epsilon",
    float,
    Scope.NON_BASE,
    0.15,
    "spread of keep probabilities by magnitude rank",
    low=0.0,
    high=1.0,
    search=True,
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
    check = check_della if sparsification == "della_magprune" else None
    return MergeMethod(
        name=name,
        fn=fn,  # type: ignore[arg-type]
        params=_gta_params(
            normalize=normalize, rescale=rescale, sparsify=sparsification is not None, extra=extra
        ),
        base=BasePolicy.REQUIRED,
        needs=SPARSIFICATION_NEEDS[sparsification],
        check=check,
        one_off_skips=ONE_OFF_SKIPS.get(sparsification, frozenset()),
        base_share="lambda",
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
            base_share="listed",
            params=(
                ParamSpec(
                    "weight", float, Scope.INPUT, REQUIRED, "the model's weight", search=True
                ),
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
                    "t",
                    float,
                    Scope.GLOBAL,
                    REQUIRED,
                    "0 = base model, 1 = the other model",
                    search=True,
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
        "sce": MergeMethod(
            name="sce",
            fn=sce,
            base=BasePolicy.REQUIRED,
            params=(
                ParamSpec(
                    "select_topk",
                    float,
                    Scope.GLOBAL,
                    1.0,
                    "fraction of coordinates kept, those that vary most across the sources",
                    low=0.0,
                    high=1.0,
                    search=True,
                ),
                _INT8_MASK,
            ),
            description="Select high-variance coordinates, weigh sources by energy, erase minority signs.",
            reference="https://arxiv.org/abs/2408.07990",
        ),
        "model_stock": MergeMethod(
            name="model_stock",
            fn=model_stock,
            base=BasePolicy.REQUIRED,
            min_inputs=3,
            params=(
                ParamSpec(
                    "filter_wise", bool, Scope.GLOBAL, False, "one interpolation ratio per row"
                ),
            ),
            description="Interpolate from the base toward the models' mean by their geometry.",
            reference="https://arxiv.org/abs/2403.19522",
        ),
        "nuslerp": MergeMethod(
            name="nuslerp",
            fn=nuslerp,
            base=BasePolicy.OPTIONAL,
            min_non_base=2,
            max_non_base=2,
            params=(
                ParamSpec(
                    "weight", float, Scope.NON_BASE, REQUIRED, "the model's weight", search=True
                ),
                ParamSpec(
                    "nuslerp_row_wise", bool, Scope.GLOBAL, False, "interpolate column vectors"
                ),
                ParamSpec(
                    "nuslerp_flatten", bool, Scope.GLOBAL, True, "interpolate the whole tensor"
                ),
            ),
            description="Spherical interpolation of two models (or task vectors) by weight.",
        ),
        "multislerp": MergeMethod(
            name="multislerp",
            fn=multislerp,
            base=BasePolicy.OPTIONAL,
            min_non_base=1,
            params=(
                ParamSpec(
                    "weight", float, Scope.NON_BASE, REQUIRED, "the model's weight", search=True
                ),
                ParamSpec(
                    "normalize_weights", bool, Scope.GLOBAL, True, "divide by the sum of weights"
                ),
                ParamSpec("eps", float, Scope.GLOBAL, 1e-8, "numerical floor", low=0.0),
            ),
            description="Barycentric interpolation of N models (or task vectors) on the sphere.",
            reference="https://goddard.blog/posts/multislerp-wow-what-a-cool-idea",
        ),
        "karcher": MergeMethod(
            name="karcher",
            fn=karcher,
            base=BasePolicy.INPUT,
            params=(
                ParamSpec("max_iter", int, Scope.GLOBAL, 10, "fixed-point steps at most", low=0),
                ParamSpec("tol", float, Scope.GLOBAL, 1e-5, "convergence tolerance", low=0.0),
            ),
            description="The Karcher (Riemannian) mean of the models on the sphere.",
            reference="https://arxiv.org/abs/2603.04972",
        ),
        "nearswap": MergeMethod(
            name="nearswap",
            fn=nearswap,
            base=BasePolicy.REQUIRED,
            min_inputs=2,
            max_inputs=2,
            params=(
                ParamSpec(
                    "t",
                    float,
                    Scope.GLOBAL,
                    REQUIRED,
                    "distance below which the other model's value is taken",
                    low=0.0,
                    search=True,
                ),
            ),
            description="Take the other model's values where they are near the base's.",
            reference="https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001",
        ),
        "arcee_fusion": MergeMethod(
            name="arcee_fusion",
            fn=arcee_fusion,
            base=BasePolicy.REQUIRED,
            min_inputs=2,
            max_inputs=2,
            params=(),
            description="Fuse the other model's most important changes (KL-weighted outliers).",
            reference="https://arcee.ai",
        ),
        "ram": MergeMethod(
            name="ram",
            fn=ram,
            base=BasePolicy.REQUIRED,
            params=(_RAM_EPSILON,),
            description="Unique changes kept, shared ones averaged.",
            reference="https://arxiv.org/abs/2601.13572",
        ),
        "ramplus_tl": MergeMethod(
            name="ramplus_tl",
            fn=ramplus_tl,
            base=BasePolicy.REQUIRED,
            params=(
                ParamSpec(
                    "r",
                    float,
                    Scope.GLOBAL,
                    0.1,
                    "reinforcement of unique changes",
                    low=0.0,
                    search=True,
                ),
                ParamSpec(
                    "alpha",
                    float,
                    Scope.GLOBAL,
                    0.2,
                    "cap of the shared/unique ratio",
                    low=0.0,
                    search=True,
                ),
                _RAM_EPSILON,
            ),
            description="RAM with each model's unique changes reinforced (tensor-local).",
            reference="https://arxiv.org/abs/2601.13572",
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
