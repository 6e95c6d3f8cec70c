"""The embedded demo: bundled persona data, tiny models built on CPU, and a merge check.

- :func:`build_demo_models` -> :class:`DemoModels`: a char-level Llama base and two LoRA
  adapters whose skills and unwanted habits live in different layers (``style``: the
  persona's register below, a rival's facts above; ``facts``: her facts above, a friendly
  register below), cached.
- :mod:`evomerge.demo.data`: the bundled files (persona, training sets, prompt sets).
- :mod:`evomerge.demo.objective`: the demo's judges and objective (style + facts + fluency).
- :mod:`evomerge.demo.baselines`: sources, start point and uniform-weight merges, scored.
- :func:`check_demo_models`: greedy answers of the sources and of fixed merges, scored.
"""

from evomerge.demo.check import check_demo_models, default_merges, format_check
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
from evomerge.demo.models import (
    SIZES,
    SOURCE_STAGES,
    DemoModels,
    DemoSize,
    build_demo_models,
    default_cache_dir,
)
from evomerge.demo.objective import judging_config, objective_max, score_answers

__all__ = [
    "SIZES",
    "SOURCE_STAGES",
    "DemoModels",
    "DemoPrompt",
    "DemoSize",
    "QAPair",
    "build_demo_models",
    "check_demo_models",
    "data_hash",
    "default_cache_dir",
    "default_merges",
    "demo_data_dir",
    "format_check",
    "judging_config",
    "load_pairs",
    "load_persona",
    "load_prompts",
    "objective_max",
    "prompts_path",
    "score_answers",
]
