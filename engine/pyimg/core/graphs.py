"""Graph walks shared by the engine and the query language."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import TypeVar

__all__ = ["reachable"]

N = TypeVar("N", bound=Hashable)


def reachable(roots: Iterable[N], edges: Callable[[N], Iterable[N]]) -> set[N]:
    """`roots` and every node reachable from them by following `edges` (iterative: graphs of
    thousands of nodes would overflow a recursive walk)."""
    seen = set(roots)
    stack = list(seen)
    while stack:
        for n in edges(stack.pop()):
            if n not in seen:
                seen.add(n)
                stack.append(n)
    return seen
