"""The contract between the executor and in-process built-in actions (see pyimg.actions)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyimg.core.digest import Digest

__all__ = ["BuiltinCall"]


def _never() -> None:
    return None


@dataclass(frozen=True)
class BuiltinCall:
    params: Any
    inputs: Mapping[str, Path]
    input_digests: Mapping[str, Digest]
    outputs: Mapping[str, Path]
    output_dirs: frozenset[str] = frozenset()
    jobs: int = 1
    check_cancelled: Callable[[], None] = field(default=_never)
    # A builtin that hashed an output while writing it records {host path: digest} here, so the
    # engine links the file into the content store instead of reading it again.
    output_digests: dict[str, Digest] = field(default_factory=dict)
