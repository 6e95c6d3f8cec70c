from __future__ import annotations

import pytest

from evomerge.exceptions import ExportError
from evomerge.export import parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5GB", 5 * 10**9),
        ("500MB", 500 * 10**6),
        ("2GiB", 2 * 2**30),
        ("1.5gb", 1_500_000_000),
        ("10 KiB", 10_240),
        ("123", 123),
        ("7B", 7),
        (4096, 4096),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "GB", "5XB", "-1GB", "0", 0, -5, True, "1e3MB", None])
def test_bad_sizes_name_the_argument_and_show_the_value(bad):
    with pytest.raises(ExportError, match=r"^shard_size: "):
        parse_size(bad)
