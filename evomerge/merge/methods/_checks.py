"""Per-tensor checks of resolved parameters; each returns the problems found (no raising).

The resolver runs them for every tensor before any merge work and reports every problem
at once, prefixed with the tensor's name.
"""

from __future__ import annotations

from evomerge.merge.methods._spec import MergeArgs

__all__ = ["check_della", "check_linear"]


def check_della(args: MergeArgs) -> list[str]:
    """density +/- epsilon within (0, 1), as mergekit's della_magprune requires (each
    parameter's own range is declared in the registry and checked before this)."""
    problems = []
    for i, p in enumerate(args.inputs):
        d, e = p["density"], p["epsilon"]
        if 0 < d < 1 and (d + e >= 1 or d - e <= 0):
            problems.append(
                f"{args.label(i)}: density +/- epsilon must lie in (0, 1) (got density={d}, epsilon={e}); "
                f"use epsilon < {min(d, 1 - d):.4g}"
            )
    return problems


def check_linear(args: MergeArgs) -> list[str]:
    if not args.globals["normalize"]:
        return []
    total = sum(p["weight"] for p in args.inputs) + (
        args.base["weight"] if args.base is not None else 0.0
    )
    if total == 0:
        return [
            "weights sum to 0, so normalize: true divides by zero; change the weights or set normalize: false"
        ]
    return []
