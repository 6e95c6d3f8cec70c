"""MergeRecipe: one merge, written the way mergekit's ``models:`` YAML writes it.

A recipe names a merge method, a base model, the input models and their parameters.
Parameter settings keep mergekit's grammar and meaning, so a mergekit user reads our
recipes without surprise and ``to_mergekit_yaml`` reproduces the merge in mergekit:

- a scalar (``weight: 0.5``) applies to every tensor;
- a list of numbers (``density: [0.2, 0.8]``) is a gradient over the layers: at position
  ``t = layer / (num_layers - 1)`` the value is interpolated linearly between the two
  nearest list entries; tensors outside the layer stack (embeddings, final norm,
  lm_head) use ``t = 0``; a model with one layer uses ``t = 1``; lists of booleans or
  strings pick an entry instead of interpolating;
- a list of ``{filter, value}`` entries picks the first whose ``filter`` is a substring of
  the tensor name (``None`` or ``"*"`` matches everything, so the catch-all goes last);
  its ``value`` may itself be a scalar or a gradient.

Precedence: a model's own ``parameters`` first, then the recipe's global ``parameters``,
then the method's default (see :mod:`evomerge.merge.methods`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeAlias

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from evomerge._yaml import load_yaml, validate_model
from evomerge.exceptions import ConfigError

__all__ = [
    "Conditional",
    "MergeRecipe",
    "ModelEntry",
    "ParamSetting",
    "evaluate_setting",
    "gradient_position",
]

Scalar: TypeAlias = bool | int | float | str
ScalarOrGradient: TypeAlias = Scalar | list[Scalar]


class Conditional(BaseModel):
    """One entry of a filtered setting: ``{filter: self_attn, value: 0.3}``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: ScalarOrGradient
    filter: str | None = None


ParamSetting: TypeAlias = ScalarOrGradient | Conditional | list[Conditional]


def _is_scalar(x: object) -> bool:
    return isinstance(x, bool | int | float | str)


def _is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def gradient_position(layer: int | None, num_layers: int) -> float:
    """The ``t`` at which a gradient is read for a tensor of ``layer`` (None: not in a layer)."""
    if layer is None:
        return 0.0
    if num_layers <= 1:
        return 1.0
    return layer / (num_layers - 1)


def evaluate_setting(
    setting: ParamSetting,
    tensor_name: str,
    t: float,
    *,
    validate: Callable[[Any], Any] | None = None,
) -> Any:
    """The value of ``setting`` for ``tensor_name`` at gradient position ``t``.

    Returns None when a filtered list has no entry matching ``tensor_name`` (the next
    scope, or the method default, then applies). ``validate`` (optional) converts each
    raw value to the parameter's type first, as mergekit does: list entries are
    validated before interpolating, so ``[0, 1]`` for a boolean parameter picks an entry.
    """
    check: Callable[[Any], Any] = validate if validate is not None else _identity
    if isinstance(setting, Conditional):
        setting = [setting]
    if _is_scalar(setting):
        return check(setting)
    if not isinstance(setting, list) or not setting:
        return None
    if all(_is_scalar(e) for e in setting):
        values = [check(e) for e in setting]
        if not all(_is_number(e) for e in values):
            return values[int(t * (len(values) - 1))]
        numbers = [float(e) for e in values]
        scaled = t * (len(numbers) - 1)
        i0 = int(scaled)
        i1 = min(len(numbers) - 1, i0 + 1)
        frac = scaled - i0
        return check((1 - frac) * numbers[i0] + frac * numbers[i1])
    for cond in setting:
        assert isinstance(cond, Conditional)
        if cond.filter is None or cond.filter == "*" or cond.filter in tensor_name:
            return evaluate_setting(cond.value, tensor_name, t, validate=validate)
    return None


def _identity(x: Any) -> Any:
    return x


def _parse_setting(value: Any) -> ParamSetting:
    """Normalize YAML data into a ParamSetting (dicts become Conditional)."""
    if isinstance(value, Mapping):
        return Conditional.model_validate(dict(value))
    if isinstance(value, list) and value and any(isinstance(e, Mapping) for e in value):
        return [Conditional.model_validate(dict(e)) for e in value]
    if isinstance(value, list):
        if not all(_is_scalar(e) for e in value):
            raise ValueError(
                f"a list setting holds numbers or {{filter, value}} entries, got {value!r}"
            )
        return list(value)
    if _is_scalar(value):
        return value
    raise ValueError(f"unsupported parameter setting {value!r}")


def _parse_settings(raw: Any) -> dict[str, ParamSetting]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ValueError(f"parameters must be a mapping, got {type(raw).__name__}")
    return {str(k): _parse_setting(v) for k, v in raw.items()}


def _dump_setting(setting: ParamSetting) -> Any:
    if isinstance(setting, Conditional):
        return setting.model_dump(exclude_none=True)
    if isinstance(setting, list):
        return [_dump_setting(e) if isinstance(e, Conditional) else e for e in setting]
    return setting


class ModelEntry(BaseModel):
    """One input model and its own parameters (highest precedence)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    parameters: dict[str, ParamSetting] = Field(default_factory=dict)

    @field_validator("parameters", mode="before")
    @classmethod
    def _params(cls, v: Any) -> dict[str, ParamSetting]:
        return _parse_settings(v)


class MergeRecipe(BaseModel):
    """A merge in mergekit's ``models:`` form. Model references are paths or names.

    A LoRA adapter source is referenced as mergekit does: ``"BASE+ADAPTER"``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    merge_method: str
    base_model: str | None = None
    models: tuple[ModelEntry, ...]
    parameters: dict[str, ParamSetting] = Field(default_factory=dict)
    dtype: str | None = None
    out_dtype: str | None = None
    tokenizer_source: str | None = None

    @field_validator("parameters", mode="before")
    @classmethod
    def _params(cls, v: Any) -> dict[str, ParamSetting]:
        return _parse_settings(v)

    # -- lookups --------------------------------------------------------------------

    def model_names(self) -> list[str]:
        """Input models in order (the base model included if it is listed)."""
        return [m.model for m in self.models]

    def entry(self, model: str) -> ModelEntry | None:
        for m in self.models:
            if m.model == model:
                return m
        return None

    def scopes(self, model: str | None) -> Iterator[Mapping[str, ParamSetting]]:
        """Settings from highest to lowest precedence: the model's own, then global."""
        if model is not None and (e := self.entry(model)) is not None:
            yield e.parameters
        yield self.parameters

    def lookup(
        self,
        name: str,
        *,
        model: str | None,
        tensor_name: str,
        t: float,
        validate: Callable[[Any], Any] | None = None,
    ) -> Any:
        """The value of parameter ``name`` for ``model`` (None: global scope only), or None.

        ``validate`` converts raw values to the parameter's type (see :func:`evaluate_setting`).
        """
        for scope in self.scopes(model):
            if name in scope:
                value = evaluate_setting(scope[name], tensor_name, t, validate=validate)
                if value is not None:
                    return value
        return None

    # -- mergekit YAML ------------------------------------------------------------------

    def to_mergekit_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"models": []}
        for m in self.models:
            item: dict[str, Any] = {"model": m.model}
            if m.parameters:
                item["parameters"] = {k: _dump_setting(v) for k, v in m.parameters.items()}
            out["models"].append(item)
        out["merge_method"] = self.merge_method
        if self.base_model is not None:
            out["base_model"] = self.base_model
        if self.parameters:
            out["parameters"] = {k: _dump_setting(v) for k, v in self.parameters.items()}
        for key in ("dtype", "out_dtype", "tokenizer_source"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    def to_mergekit_yaml(self) -> str:
        return yaml.safe_dump(self.to_mergekit_dict(), sort_keys=False, default_flow_style=None)

    @classmethod
    def from_mergekit_dict(
        cls, data: Mapping[str, Any], *, source: str = "<recipe>"
    ) -> MergeRecipe:
        """Parse mergekit's ``models:`` form; errors name ``source`` and every bad field."""
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"{source}: expected a mapping at the top level, got {type(data).__name__}"
            )
        if "slices" in data or "modules" in data:
            raise ConfigError(
                f"{source}: only mergekit's 'models:' form is supported; "
                "rewrite 'slices:'/'modules:' as a 'models:' list"
            )
        known = {
            "models",
            "merge_method",
            "base_model",
            "parameters",
            "dtype",
            "out_dtype",
            "tokenizer_source",
        }
        extra = {k: v for k, v in data.items() if k not in known}
        clean = {k: v for k, v in data.items() if k in known}
        recipe = validate_model(cls, clean, source=source)
        if extra:
            # mergekit options we do not interpret (chat_template, tokenizer, ...) are refused
            # rather than silently ignored, so that a merge never differs without notice.
            raise ConfigError(
                f"{source}: unsupported field(s) {sorted(extra)}; supported: {sorted(known)}"
            )
        return recipe

    @classmethod
    def from_yaml(cls, path: str | Path) -> MergeRecipe:
        return cls.from_mergekit_dict(load_yaml(path), source=str(path))
