"""The driver imports the sampler's lazy dependencies while its workers start, so the first
informed CMA-ES ask does not stop the search for a second (``cmaes`` imports scipy.stats)."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import sys
from evomerge.config import SearchConfig
from evomerge.search._sampler import preload_sampler
assert "cmaes" not in sys.modules, "imported before the preload"
preload_sampler(SearchConfig(sampler={sampler!r})).join(timeout=120)
print("cmaes" in sys.modules)
"""


@pytest.mark.parametrize(("sampler", "loaded"), [("cmaes", True), ("random", False)])
def test_preload_imports_only_what_the_sampler_needs(sampler: str, loaded: bool) -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(sampler=sampler)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert out.stdout.strip() == str(loaded)
