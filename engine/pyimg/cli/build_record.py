"""The per-action record of the last build (`last_build.json`) that `pyimg explain` reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pyimg.core.cas import atomic_write_bytes
from pyimg.core.digest import canonical_json

__all__ = ["mark_all_cached", "save_build_record"]


def save_build_record(output_base: Path, data: dict[str, Any]) -> None:
    """Make `data` the last build's record; the one it replaces is merged into previous_build.json.

    previous_build.json keeps each action's latest record before this build, also for actions
    this build did not need, so `explain` compares with the previous build *of that action*.
    """
    last = output_base / "last_build.json"
    previous = output_base / "previous_build.json"
    raw = canonical_json(data)
    try:
        older_raw = last.read_bytes()
    except FileNotFoundError:
        older_raw = b""
    if older_raw == raw:
        return  # a repeated no-op build: both records already say the same
    older = _parse_record(older_raw)
    if older:
        try:
            merged = _parse_record(previous.read_bytes())
        except FileNotFoundError:
            merged = {}
        merged.update(older)
        atomic_write_bytes(previous, canonical_json(merged))
    atomic_write_bytes(last, raw)


def mark_all_cached(output_base: Path) -> None:
    """What a no-op build records: the same actions and keys, every one a cache hit."""
    try:
        data = _parse_record((output_base / "last_build.json").read_bytes())
    except FileNotFoundError:
        return
    if any(not entry.get("cached") for entry in data.values()):
        save_build_record(output_base, {k: {**v, "cached": True} for k, v in data.items()})


def _parse_record(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
