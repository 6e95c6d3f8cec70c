"""evomerge: evolutionary search over merges of fine-tuned LLMs, scored by pluggable judges."""

__version__ = "0.1.0"
__all__ = ["__version__"]
