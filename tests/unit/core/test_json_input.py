"""The guarded JSON parser: documents nested too deeply are a ValueError, never a RecursionError."""

from __future__ import annotations

import pytest
from pyimg.core.json_input import MAX_DEPTH, JSONNestingError, loads


def test_ordinary_documents_parse():
    assert loads(b'{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}
    assert loads("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5_000, 100_000])
def test_deep_documents_are_refused(depth):
    with pytest.raises(JSONNestingError, match=f"nested more than {MAX_DEPTH} levels"):
        loads(b'{"a": ' + b"[" * depth + b"]" * depth + b"}")


def test_errors_are_value_errors():
    for bad in (b"{", b"\xff", b'{"a": ' + b"[" * 10_000):
        with pytest.raises(ValueError):
            loads(bad)
