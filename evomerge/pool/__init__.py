"""The model pool: a base model and its fine-tuned sources, read lazily, checked to match.

::

    pool = ModelPool.open("base", ["ft_a", "lora_b"])   # full checkpoints or peft LoRA dirs
    for name in pool.tensor_names:
        info = pool.info(name)                           # shape, dtype, layer, module type
        tv = pool.task_vector(0, name)                   # source 0 minus base, float32

Tensors are read one at a time from safetensors (single or sharded); pickle checkpoints
are refused unless ``allow_pickle=True``. See :class:`ModelPool` for the contract.
"""

from evomerge.pool._arch import TensorInfo, VocabCrop
from evomerge.pool._checkpoint import Checkpoint
from evomerge.pool._lora import LoraAdapter
from evomerge.pool._naming import (
    INPUT_EMBEDDINGS,
    MODULE_TYPES,
    OUTPUT_HEADS,
    classify_tensor,
    is_vocab_tensor,
    vocab_role,
)
from evomerge.pool._pool import ModelPool, unique_names

__all__ = [
    "INPUT_EMBEDDINGS",
    "MODULE_TYPES",
    "OUTPUT_HEADS",
    "Checkpoint",
    "LoraAdapter",
    "ModelPool",
    "TensorInfo",
    "VocabCrop",
    "classify_tensor",
    "is_vocab_tensor",
    "unique_names",
    "vocab_role",
]
