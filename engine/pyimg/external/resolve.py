"""Resolving every MODULE.pyimg declaration at once: into pyimg.lock (`pyimg lock`), or into the
repository cache (`pyimg fetch`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyimg.external.repositories import Repositories, lock_covers, read_lock, write_lock
from pyimg.loading.module_file import PipLock

__all__ = ["LockUpdate", "fetch_all", "update_lock"]


@dataclass
class LockUpdate:
    changed: list[str] = field(default_factory=list)  # entries that differ from the old lock
    dropped: list[str] = field(default_factory=list)  # entries whose declaration is gone
    entries: dict[str, Any] = field(default_factory=dict)


def update_lock(
    repos: Repositories,
    workspace: Path,
    update: list[str],
    on_pinned: Callable[[str, str], None] = lambda name, pinned: None,
) -> LockUpdate:
    """Rewrite pyimg.lock: entries the lock covers are kept, the others (and those named in
    `update`) are resolved again. `on_pinned(name, digest)` is told of each entry as it is
    settled."""
    for name in update:
        repos.declaration(name)  # an unknown name is an error, with "did you mean"
    old = read_lock(workspace)
    result = LockUpdate()
    for decl in repos.module.declarations:
        entry = old.get(decl.name)
        # An npm_lock is checked every time: that is local and cheap, and its package.json may
        # have moved on while its package-lock.json did not.
        if decl.name in update or decl.kind == "npm_lock" or not lock_covers(decl, entry, workspace):
            entry = repos.lock_entry(decl)
            if entry is not None and entry != old.get(decl.name):
                result.changed.append(decl.name)
        elif isinstance(decl, PipLock) and decl.pyproject is not None:
            # So may a pip_lock's pyproject.toml (checked without the network).
            from pyimg.external.python_lock import read_requirements

            read_requirements(decl, workspace)
        if entry is not None:
            result.entries[decl.name] = entry
            on_pinned(decl.name, str(entry.get("digest") or entry.get("sha256")))
    result.dropped = sorted(set(old) - set(result.entries))
    write_lock(workspace, result.entries)
    return result


def fetch_all(repos: Repositories) -> None:
    """Download every pinned declaration into the repository cache, with the base layers a
    build would fetch lazily."""
    repos.check_pinned()
    for decl in repos.module.declarations:
        repos.resolve(decl.name)
        repos.fetch(decl)
