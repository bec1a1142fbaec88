"""One command's view of the world: workspace, output base, caches, and the lock that guards them."""

from __future__ import annotations

import fcntl
import hashlib
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: the no-op fast path needs only default_cache_root
    from pyimg.core.action_cache import ActionCache
    from pyimg.core.cas import ContentStore
    from pyimg.core.file_digests import FileDigestCache

__all__ = ["Session", "cwd_package", "default_cache_root", "holding"]


def default_cache_root(configured: str | None = None) -> Path:
    """The cache root when --disk-cache is not given: `configured` (PYIMG_DISK_CACHE, which
    only cli/ reads), else the user's XDG cache directory."""
    if configured:
        return Path(configured)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "pyimg"


def cwd_package(workspace: Path) -> str:
    """The package of the current directory, which relative labels and patterns start from."""
    try:
        rel = Path.cwd().resolve().relative_to(workspace)
    except ValueError:
        return ""
    return "" if str(rel) == "." else rel.as_posix()


@contextmanager
def holding(lock: IO[str], command: str) -> Iterator[None]:
    """Run `command` under the exclusive lock on `lock` (taken by the caller), saying who holds it
    to commands that wait; the lock is released at the end."""
    lock.seek(0)
    lock.truncate()
    lock.write(f"pyimg {command}, pid {os.getpid()}")
    lock.flush()
    try:
        yield
    finally:
        lock.seek(0)
        lock.truncate()
        lock.flush()
        fcntl.flock(lock, fcntl.LOCK_UN)


@dataclass
class Session:
    workspace: Path
    cache_root: Path
    output_base: Path

    @classmethod
    def open(cls, workspace: Path, disk_cache: str | None, output_base: str | None,
             configured_cache: str | None = None) -> Session:
        """`disk_cache` and `output_base`: the flags; `configured_cache`: see
        `default_cache_root`."""
        cache_root = (Path(disk_cache).resolve() if disk_cache
                      else default_cache_root(configured_cache))
        if output_base:
            ob = Path(output_base).resolve()
        else:
            tag = hashlib.sha256(str(workspace).encode()).hexdigest()[:16]
            ob = cache_root / "output_bases" / tag
        ob.mkdir(parents=True, exist_ok=True)
        cache_root.mkdir(parents=True, exist_ok=True)
        return cls(workspace, cache_root, ob)

    @contextmanager
    def locked(self, command: str) -> Iterator[None]:
        """Hold the output base for this command; a second command waits and says so."""
        path = self.output_base / "lock"
        with open(path, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another pyimg command"
                print(
                    f"Another command ({holder}) is running on this output base; waiting for it "
                    "to finish...",
                    file=sys.stderr,
                    flush=True,
                )
                fcntl.flock(f, fcntl.LOCK_EX)
            with holding(f, command):
                yield

    def digest_cache(self, lazy: bool = False) -> FileDigestCache:
        """The output base's file digests (`lazy`: read on first use)."""
        from pyimg.core.file_digests import FileDigestCache

        return FileDigestCache(self.output_base / "file_digests.json", lazy=lazy)

    def stores(self, digests: FileDigestCache) -> tuple[ContentStore, ActionCache]:
        from pyimg.core.action_cache import ActionCache
        from pyimg.core.cas import ContentStore

        cas = ContentStore(self.cache_root, memo=digests)
        return cas, ActionCache(self.cache_root, cas)
