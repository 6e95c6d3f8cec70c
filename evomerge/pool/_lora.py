"""LoraAdapter: a peft LoRA adapter directory read as per-tensor task vectors.

For a targeted module with ``lora_A`` [r, in] and ``lora_B`` [out, r] the update of its
weight is ``delta = (B @ A) * scale`` ([out, in]; transposed when ``fan_in_fan_out``, and
always for embedding LoRA whose ``lora_embedding_A`` is [r, vocab]), with
``scale = alpha / r``, or ``alpha / sqrt(r)`` under ``use_rslora``; ``r`` and ``alpha`` come
from ``rank_pattern``/``alpha_pattern`` when a pattern matches the module's name (as peft
matches them: the pattern is a regex that must match a dot-separated suffix of the name).
A ``lora_B`` bias (``lora_bias``) updates the module's bias by ``bias * scale``. Full tensors
stored in the adapter (``modules_to_save``, a saved ``base_layer``) replace the base tensor.
Never materializes a merged model; deltas are computed in float32 on request.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from evomerge.exceptions import CheckpointError, UnsafeCheckpointError
from evomerge.pool._checkpoint import cast_to
from evomerge.pool._files import ALLOW_PICKLE_HINT, TensorMeta, WeightFile

logger = logging.getLogger(__name__)

__all__ = ["LoraAdapter"]

_PREFIX = "base_model.model."
# <module>.lora_A[.<adapter>].weight / <module>.lora_B[.<adapter>].(weight|bias)
_LINEAR_RE = re.compile(
    r"^(?P<mod>.+)\.lora_(?P<ab>[AB])(?:\.(?P<adapter>[^.]+))?\.(?P<param>weight|bias)$"
)
# <module>.lora_embedding_A[.<adapter>]
_EMBED_RE = re.compile(r"^(?P<mod>.+)\.lora_embedding_(?P<ab>[AB])(?:\.(?P<adapter>[^.]+))?$")
# <module>.modules_to_save[.<adapter>].<param> and <module>.base_layer.<param>
_SAVED_RE = re.compile(r"^(?P<mod>.+)\.modules_to_save(?:\.(?P<adapter>[^.]+))?\.(?P<param>[^.]+)$")
_BASE_LAYER_RE = re.compile(r"^(?P<mod>.+)\.base_layer\.(?P<param>[^.]+)$")
_UNSUPPORTED_KEYS = {
    "lora_magnitude_vector": "DoRA (use_dora)",
    "trainable_tokens": "trainable_token_indices",
}


@dataclass
class _Pair:
    """Keys of one module's low-rank factors in the adapter file."""

    a: str | None = None
    b: str | None = None
    bias: str | None = None
    embedding: bool = False


class LoraAdapter:
    """One peft LoRA adapter (``adapter_config.json`` + ``adapter_model.safetensors``).

    Built with :meth:`open`, which reads the config and the file header and validates
    every factor's shape against the configured ranks. :meth:`delta` and :meth:`replaces`
    read only the tensors they need. Picklable (handles reopen lazily); thread-safe reads.
    """

    def __init__(self, *, path: Path, config: dict[str, Any], file: WeightFile) -> None:
        self.path = path
        self.config = config
        self.r = int(config.get("r", 8))
        self.alpha = float(config.get("lora_alpha", 8))
        self.use_rslora = bool(config.get("use_rslora", False))
        self.fan_in_fan_out = bool(config.get("fan_in_fan_out", False))
        self.rank_pattern: dict[str, int] = dict(config.get("rank_pattern") or {})
        self.alpha_pattern: dict[str, float] = dict(config.get("alpha_pattern") or {})
        self._file = file
        self._meta: dict[str, TensorMeta] = file.metadata()
        self._pairs, self._full = self._parse_keys()
        self._validate_shapes()

    @classmethod
    def open(cls, path: str | Path, *, allow_pickle: bool = False) -> LoraAdapter:
        """Open an adapter directory.

        Raises:
            CheckpointError: missing directory/config/weights, a non-LoRA or unsupported peft
                variant (DoRA, trainable tokens, layer replication), or inconsistent factors.
            UnsafeCheckpointError: only ``adapter_model.bin`` and ``allow_pickle`` is False.
        """
        root = Path(path).expanduser().absolute()
        cfg_path = root / "adapter_config.json"
        if not root.is_dir():
            raise CheckpointError(f"{root}: adapter directory does not exist")
        if not cfg_path.is_file():
            raise CheckpointError(f"{root}: not a peft adapter; expected {cfg_path.name}")
        try:
            config = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:  # ValueError: bad JSON, not UTF-8
            raise CheckpointError(f"{cfg_path}: cannot parse: {err}") from None
        _check_supported(cfg_path, config)
        st, pt = root / "adapter_model.safetensors", root / "adapter_model.bin"
        if st.is_file():
            file = WeightFile(path=st, pickle=False)
        elif pt.is_file() and not allow_pickle:
            raise UnsafeCheckpointError(
                f"{root}: only {pt.name} (pickle) found; loading pickle can run arbitrary code. "
                f"Convert it to safetensors, or, {ALLOW_PICKLE_HINT}"
            )
        elif pt.is_file():
            file = WeightFile(path=pt, pickle=True)
        else:
            raise CheckpointError(f"{root}: no adapter weights; expected {st.name}")
        return cls(path=root, config=config, file=file)

    # -- per-module hyperparameters ---------------------------------------------------

    def rank(self, module: str) -> int:
        """LoRA rank of ``module`` (``rank_pattern`` first, then ``r``)."""
        key = _pattern_key(self.rank_pattern, module)
        return int(self.rank_pattern[key]) if key is not None else self.r

    def alpha_of(self, module: str) -> float:
        """``lora_alpha`` of ``module`` (``alpha_pattern`` first)."""
        key = _pattern_key(self.alpha_pattern, module)
        return float(self.alpha_pattern[key]) if key is not None else self.alpha

    def scale(self, module: str) -> float:
        """``alpha / r``, or ``alpha / sqrt(r)`` with ``use_rslora``."""
        r = self.rank(module)
        return self.alpha_of(module) / (math.sqrt(r) if self.use_rslora else r)

    # -- tensors ----------------------------------------------------------------------

    @property
    def target_tensors(self) -> list[str]:
        """Tensor names that get a low-rank update (``<module>.weight``, maybe ``.bias``)."""
        out = []
        for mod, pair in self._pairs.items():
            out.append(f"{mod}.weight")
            if pair.bias is not None:
                out.append(f"{mod}.bias")
        return out

    @property
    def replaced_tensors(self) -> list[str]:
        """Tensor names stored whole in the adapter (``modules_to_save``, ``base_layer``)."""
        return list(self._full)

    def replaced_shape(self, name: str) -> tuple[int, ...] | None:
        key = self._full.get(name)
        return None if key is None else self._meta[key][0]

    def delta_shape(self, name: str) -> tuple[int, ...] | None:
        """The shape :meth:`delta` returns for ``name`` (from the header), or None if untargeted."""
        mod, _, param = name.rpartition(".")
        pair = self._pairs.get(mod)
        if pair is None or pair.a is None or pair.b is None:
            return None
        if param == "bias":
            return self._meta[pair.bias][0] if pair.bias is not None else None
        if param != "weight":
            return None
        shape = (self._meta[pair.b][0][0], self._meta[pair.a][0][1])  # [out, in]
        return shape[::-1] if self.fan_in_fan_out or pair.embedding else shape

    def delta(
        self,
        name: str,
        base_shape: tuple[int, ...] | torch.Size,
        *,
        device: str | torch.device = "cpu",
    ) -> torch.Tensor | None:
        """The float32 update of tensor ``name``, or None when the adapter does not target it.

        ``base_shape`` is the shape the update must have (the base tensor's, or the
        replacing tensor's); a different shape raises CheckpointError.
        """
        mod, _, param = name.rpartition(".")
        pair = self._pairs.get(mod)
        if (
            pair is None
            or (param == "bias" and pair.bias is None)
            or param not in ("weight", "bias")
        ):
            return None
        assert pair.a is not None and pair.b is not None  # checked at open
        scale = self.scale(mod)
        if param == "bias":
            assert pair.bias is not None
            out = self._read(pair.bias, device) * scale
        else:
            a, b = self._read(pair.a, device), self._read(pair.b, device)
            out = (b @ a) * scale  # [out, r] @ [r, in] -> [out, in]
            if self.fan_in_fan_out or pair.embedding:
                out = out.T.contiguous()  # [in, out] (Conv1D, embeddings: [vocab, dim])
        if tuple(out.shape) != tuple(base_shape):
            hint = " (check fan_in_fan_out in adapter_config.json)" if out.dim() == 2 else ""
            raise CheckpointError(
                f"{self.path}: LoRA update of {name!r} has shape {tuple(out.shape)} but the "
                f"tensor has shape {tuple(base_shape)}{hint}"
            )
        return out

    def replaces(
        self, name: str, *, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
    ) -> torch.Tensor | None:
        """The full tensor the adapter stores for ``name`` (it replaces the base's), or None."""
        key = self._full.get(name)
        if key is None:
            return None
        return cast_to(self._file.get(key), dtype=dtype, device=device)

    def _read(self, key: str, device: str | torch.device) -> torch.Tensor:
        return cast_to(self._file.get(key), dtype=torch.float32, device=device)

    def close(self) -> None:
        self._file.close()

    def __repr__(self) -> str:
        return f"LoraAdapter({str(self.path)!r}, r={self.r}, alpha={self.alpha}, modules={len(self._pairs)})"

    # -- parsing ----------------------------------------------------------------------

    def _parse_keys(self) -> tuple[dict[str, _Pair], dict[str, str]]:
        pairs: dict[str, _Pair] = {}
        full: dict[str, str] = {}
        adapters: set[str] = set()
        for key in self._meta:
            for marker, what in _UNSUPPORTED_KEYS.items():
                if marker in key:
                    raise CheckpointError(
                        f"{self.path}: {what} adapters are not supported (tensor {key!r})"
                    )
            rel = key[len(_PREFIX) :] if key.startswith(_PREFIX) else key
            if m := _LINEAR_RE.match(rel):
                pair = pairs.setdefault(m["mod"], _Pair())
                if m["param"] == "bias":
                    if m["ab"] == "A":
                        raise CheckpointError(f"{self.path}: unexpected lora_A bias {key!r}")
                    pair.bias = key
                elif m["ab"] == "A":
                    pair.a = key
                else:
                    pair.b = key
            elif m := _EMBED_RE.match(rel):
                pair = pairs.setdefault(m["mod"], _Pair())
                pair.embedding = True
                if m["ab"] == "A":
                    pair.a = key
                else:
                    pair.b = key
            elif m := _SAVED_RE.match(rel):
                full[f"{m['mod']}.{m['param']}"] = key
            elif m := _BASE_LAYER_RE.match(rel):
                full[f"{m['mod']}.{m['param']}"] = key
                continue
            else:
                full[rel] = key  # peft >= 0.13 saves modules_to_save under the plain name
                continue
            if m["adapter"]:
                adapters.add(m["adapter"])
        if len(adapters) > 1:
            raise CheckpointError(
                f"{self.path}: holds several adapters ({', '.join(sorted(adapters))}); save each "
                "adapter to its own directory"
            )
        if not pairs and not full:
            raise CheckpointError(f"{self.path}: the adapter file holds no tensors")
        return pairs, full

    def _validate_shapes(self) -> None:
        for mod, pair in self._pairs.items():
            if pair.a is None or pair.b is None:
                missing = "lora_A" if pair.a is None else "lora_B"
                raise CheckpointError(f"{self.path}: module {mod!r} has no {missing} factor")
            a_shape, b_shape = self._meta[pair.a][0], self._meta[pair.b][0]
            r = self.rank(mod)
            if len(a_shape) != 2 or len(b_shape) != 2:
                raise CheckpointError(
                    f"{self.path}: {mod!r}: only 2-D LoRA factors (linear, embedding) are "
                    f"supported, got lora_A {a_shape} and lora_B {b_shape}"
                )
            if a_shape[0] != r or b_shape[1] != r:
                raise CheckpointError(
                    f"{self.path}: {mod!r}: adapter_config.json gives rank {r}, but lora_A has "
                    f"shape {a_shape} and lora_B {b_shape} (expected [{r}, in] and [out, {r}])"
                )


def _check_supported(cfg_path: Path, config: Any) -> None:
    if not isinstance(config, dict):
        raise CheckpointError(f"{cfg_path}: expected a JSON object")
    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise CheckpointError(
            f"{cfg_path}: peft_type {peft_type!r} is not supported; only LORA adapters are"
        )
    for key, what in (
        ("use_dora", "DoRA"),
        ("trainable_token_indices", "trainable tokens"),
        ("layer_replication", "layer replication"),
    ):
        if config.get(key):
            raise CheckpointError(
                f"{cfg_path}: {key}={config[key]!r}: {what} adapters are not supported"
            )
    for key in ("r", "lora_alpha"):
        value = config.get(key, 8)
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise CheckpointError(f"{cfg_path}: {key} must be a positive number, got {value!r}")


def _pattern_key(patterns: dict[str, Any], module: str) -> str | None:
    """The first pattern that matches a dot-separated suffix of ``module`` (peft's rule)."""
    for key in patterns:
        if re.fullmatch(rf"(?:.*\.)?(?:{key})", module):
            return key
    return None
