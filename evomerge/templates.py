"""``str.format`` templates with named fields: parsing and checking, for generation prompts
and judge prompts alike (each lists the fields it allows).

::

    template_fields("[INST] {system} {question} [/INST]")     # ["system", "question"]
    check_template("Q: {question} {persona}", ("question",))   # ValueError naming {persona}

Literal braces are written ``{{`` and ``}}``.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

__all__ = ["check_template", "template_fields"]


def template_fields(template: str) -> list[str]:
    """The field names ``template`` uses, in order (repeats kept).

    Raises ValueError on bad syntax (an unmatched brace) and on positional fields
    (``{}``, ``{0}``), with a message that says how to write it.
    """
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise ValueError(
            f"invalid template syntax ({err}); write literal braces as '{{{{' and '}}}}'"
        ) from None
    for _, field, _, _ in parsed:
        if field is None:
            continue
        if not field or field.isdigit():
            raise ValueError(
                f"unknown placeholder {{{field}}}: positional fields are not allowed; use named ones"
            )
        names.append(field)
    return names


def check_template(template: str, allowed: Sequence[str]) -> list[str]:
    """:func:`template_fields` of ``template``, all of which must be in ``allowed``;
    ValueError listing the unknown ones (``{answer.upper}`` is unknown too) and the choices."""
    used = template_fields(template)
    unknown = sorted({f for f in used if f not in allowed})
    if unknown:
        shown = ", ".join("{" + f + "}" for f in unknown)
        raise ValueError(f"unknown placeholder(s) {shown}. Allowed: {', '.join(allowed)}")
    return used
