"""A persistent cache of source-file digests, so that unchanged files are never hashed again.

A file's digest is reused while its (size, mtime_ns, inode, ctime_ns) is unchanged; ctime cannot be
set by a user, so an edit that restores the mtime is still seen. The cache is one JSON file per
output base, read once at start and written atomically at the end of a build.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from pyimg.core.cas import atomic_write_bytes
from pyimg.core.digest import Digest, canonical_json, digest_file

__all__ = ["FileDigestCache"]

_StatKey = tuple[int, int, int, int]


def stat_key(st: os.stat_result) -> _StatKey:
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


class FileDigestCache:
    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[_StatKey, str]] = {}
        self._dirty = False
        self.hashed = 0  # files actually read this build (for tests and benchmarks)
        if path is not None:
            try:
                raw = json.loads(path.read_bytes())
                self._entries = {k: (tuple(v[0]), v[1]) for k, v in raw.items()}  # type: ignore[misc]
            except (FileNotFoundError, ValueError, TypeError, IndexError):
                self._entries = {}

    def digest(self, path: str | Path) -> tuple[Digest, int]:
        """The digest and size of the file at `path` (absolute), hashing only when it changed."""
        digest, size, _ = self.digest_and_mode(path)
        return digest, size

    def digest_and_mode(self, path: str | Path) -> tuple[Digest, int, bool]:
        """Like `digest`, plus whether the file is executable (it shapes layer modes)."""
        st = os.stat(path)
        executable = bool(st.st_mode & 0o111)
        key = stat_key(st)
        name = str(path)
        with self._lock:
            hit = self._entries.get(name)
        if hit is not None and hit[0] == key and hit[1]:
            return Digest.from_hex(hit[1]), st.st_size, executable
        digest, size = digest_file(path)
        # Re-stat: if the file changed while we read it, do not remember a digest for it.
        if stat_key(os.stat(path)) == key:
            with self._lock:
                self._entries[name] = (key, digest.hex)
                self._dirty = True
        self.hashed += 1
        return digest, size, executable

    # StatMemo protocol, so the content store can persist which blobs it verified.
    def get(self, path: str) -> _StatKey | None:
        with self._lock:
            hit = self._entries.get(path)
        return hit[0] if hit else None

    def put(self, path: str, key: _StatKey) -> None:
        with self._lock:
            self._entries[path] = (key, "")
            self._dirty = True

    def pop(self, path: str) -> None:
        with self._lock:
            if self._entries.pop(path, None) is not None:
                self._dirty = True

    def save(self) -> None:
        if self._path is None or not self._dirty:
            return
        with self._lock:
            data = {k: [list(v[0]), v[1]] for k, v in self._entries.items()}
        atomic_write_bytes(self._path, canonical_json(data))
        self._dirty = False
