"""Parsing JSON that pyimg did not write (layouts, manifests, registry answers, user files): one
guarded parser, whose every failure is a ValueError that callers report as invalid JSON."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MAX_DEPTH", "JSONNestingError", "loads"]

# OCI documents, registry answers and credential files nest a handful of levels; anything
# deeper is hostile or broken, and would make later walks (validation, canonical JSON) recurse.
MAX_DEPTH = 100


class JSONNestingError(ValueError):
    """The document nests deeper than MAX_DEPTH."""


def loads(data: str | bytes) -> Any:
    """`json.loads(data)`, refusing documents nested deeper than MAX_DEPTH. Invalid JSON raises
    json.JSONDecodeError, bytes that are not UTF-8 UnicodeDecodeError: both ValueErrors."""
    too_deep = JSONNestingError(f"JSON nested more than {MAX_DEPTH} levels deep")
    try:
        obj = json.loads(data)
    except RecursionError:  # the C parser stops at Python's recursion limit, cleanly
        raise too_deep from None
    if isinstance(data, str):
        brackets = data.count("[") + data.count("{")
    else:
        brackets = data.count(b"[") + data.count(b"{")
    if brackets > MAX_DEPTH and _depth(obj) > MAX_DEPTH:
        raise too_deep
    return obj


def _depth(obj: Any) -> int:
    """Nesting depth of containers in `obj`, walked without recursion."""
    deepest = 0
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        deepest = max(deepest, depth)
        if depth <= MAX_DEPTH:
            stack.extend((child, depth + 1) for child in children)
    return deepest
