"""The embedded demo: bundled persona data, tiny models built on CPU, and a merge check.

- :func:`build_demo_models` -> :class:`DemoModels`: a char-level Llama base and two LoRA
  fine-tunes (``style``: the persona's ojousama register; ``facts``: her facts), cached.
- :mod:`evomerge.demo.data`: the bundled files (persona, training sets, prompt sets).
- :func:`check_demo_models`: greedy answers of the sources and of simple merges, scored.
"""

from evomerge.demo.check import DEFAULT_MERGES, check_demo_models, format_check
from evomerge.demo.data import (
    DemoPrompt,
    QAPair,
    data_hash,
    demo_data_dir,
    load_pairs,
    load_persona,
    load_prompts,
    prompts_path,
)
from evomerge.demo.models import SIZES, DemoModels, DemoSize, build_demo_models, default_cache_dir

__all__ = [
    "DEFAULT_MERGES",
    "SIZES",
    "DemoModels",
    "DemoPrompt",
    "DemoSize",
    "QAPair",
    "build_demo_models",
    "check_demo_models",
    "data_hash",
    "default_cache_dir",
    "demo_data_dir",
    "format_check",
    "load_pairs",
    "load_persona",
    "load_prompts",
    "prompts_path",
]
