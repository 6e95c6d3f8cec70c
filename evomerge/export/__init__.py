"""Writing results out: Hugging Face checkpoints, mergekit YAML, the ``evomerge merge`` command.

``write_checkpoint`` streams named tensors into a sharded safetensors checkpoint with its
config, generation config and tokenizer, atomically. ``merge_from_yaml`` runs one merge
from a mergekit-format YAML (the ``evomerge merge`` command); ``emit_mergekit_yaml``
writes a recipe as the YAML mergekit reproduces it from. ``write_path_checkpoint`` writes a
data-flow path (scales folded into the weights) with its mergekit passthrough YAML.
"""

from evomerge.export._checkpoint import MERGE_CONFIG_NAME, write_checkpoint
from evomerge.export._files import TOKENIZER_FILES
from evomerge.export._path import (
    fold_factors,
    iter_path_tensors,
    path_to_mergekit_yaml,
    write_path_checkpoint,
)
from evomerge.export._sizes import parse_size
from evomerge.export.merge_cmd import emit_mergekit_yaml, merge_from_yaml
from evomerge.export.trial import export_trial

__all__ = [
    "MERGE_CONFIG_NAME",
    "TOKENIZER_FILES",
    "emit_mergekit_yaml",
    "export_trial",
    "fold_factors",
    "iter_path_tensors",
    "merge_from_yaml",
    "parse_size",
    "path_to_mergekit_yaml",
    "write_checkpoint",
    "write_path_checkpoint",
]
