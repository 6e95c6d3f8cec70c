"""evomerge.dtypes: the one dtype table, its errors, and that importing it needs no torch."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from evomerge.dtypes import FLOAT_DTYPES, WORKING_DTYPES, dtype_name, to_torch
from evomerge.exceptions import MergeError


def test_names_round_trip_through_torch() -> None:
    for name in FLOAT_DTYPES:
        assert dtype_name(to_torch(name)) == name
        assert to_torch(f"torch.{name}") is getattr(torch, name)  # mergekit's spelling
    assert to_torch(torch.float16) is torch.float16


def test_errors_name_the_field_and_list_the_choices() -> None:
    with pytest.raises(
        MergeError, match=r"^out_dtype: unknown dtype 'float8'\. Available: float32, "
    ):
        to_torch("float8", field="out_dtype", error=MergeError)
    with pytest.raises(ValueError, match=r"merge\.dtype: unknown dtype 'float64'"):
        to_torch("float64", allowed=WORKING_DTYPES, field="merge.dtype")


def test_importing_the_table_does_not_import_torch() -> None:
    code = "import sys, evomerge.dtypes; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
