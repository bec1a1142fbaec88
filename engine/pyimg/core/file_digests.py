"""A persistent cache of file digests, so that unchanged files are never hashed again.

A file's digest is reused while its (size, mtime_ns, inode, ctime_ns) is unchanged; ctime cannot be
set by a user, so an edit that restores the mtime is still seen. The cache is one JSON file per
output base, written atomically by `compact`, plus a log of the changes since (JSON lines, one
entry each) that `save` adds to: a build that changes a few entries of 10,000s does not read or
rewrite them all. The log is folded into the file once it grows past `_LOG_LIMIT` bytes. An entry
vouches for itself (its stat key), so a log line lost or torn by a crash only forgets entries, and
a line replayed over a newer file (a crash between the fold's two writes) is stale by its stat.

Opened `lazy`, the files are read at the first lookup of an entry not `remember`ed, and while
they are unread a file under `SMALL` bytes is hashed again instead: cheaper than reading them.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from pyimg.core.cas import StatKey, atomic_write_bytes
from pyimg.core.digest import Digest, canonical_json, digest_stream

__all__ = ["SMALL", "FileDigestCache", "StatKey", "stat_key"]

_Entry = tuple[StatKey, str]  # the stat it was taken at, the hex digest ("" for a verified blob)
SMALL = 1 << 20
_LOG_LIMIT = 1 << 18  # beyond this many bytes of log, `append` folds it into the file


def stat_key(st: os.stat_result) -> StatKey:
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


class FileDigestCache:
    def __init__(self, path: Path | None, lazy: bool = False) -> None:
        self._path = path
        self._log = path.with_suffix(".log") if path is not None else None
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._changes: dict[str, _Entry | None] = {}  # since the last save or append
        self._loaded = path is None
        self.hashed = 0  # files actually read this build (for tests and benchmarks)
        if not lazy:
            with self._lock:
                self._load()

    def _load(self) -> None:
        """Read the file and its log (under the lock); entries set since opening win."""
        if self._loaded:
            return
        assert self._path is not None and self._log is not None
        entries: dict[str, _Entry] = {}
        try:
            raw = json.loads(self._path.read_bytes())
            entries = {k: (tuple(v[0]), v[1]) for k, v in raw.items()}
        except (FileNotFoundError, ValueError, TypeError, IndexError, AttributeError):
            entries = {}
        try:
            log = self._log.read_bytes().splitlines()
        except FileNotFoundError:
            log = []
        for line in log:
            try:
                name, key, hexpart = json.loads(line)
                if key is None:
                    entries.pop(name, None)
                else:
                    entries[name] = (tuple(key), hexpart)
            except (ValueError, TypeError):
                continue  # a line torn by a crash: that entry is merely forgotten
        entries.update(self._entries)
        for name, change in self._changes.items():
            if change is None:
                entries.pop(name, None)
        self._entries = entries
        self._loaded = True

    def _lookup(self, name: str, size: int) -> _Entry | None:
        with self._lock:
            hit = self._entries.get(name)
            if hit is None and not self._loaded and size >= SMALL:
                self._load()
                hit = self._entries.get(name)
        return hit

    def _set(self, name: str, entry: _Entry | None) -> None:
        with self._lock:
            if entry is None:
                self._entries.pop(name, None)
            else:
                self._entries[name] = entry
            self._changes[name] = entry

    def digest(self, path: str | Path) -> tuple[Digest, int]:
        """The digest and size of the file at `path` (absolute), hashing only when it changed."""
        digest, size, _ = self.digest_and_mode(path)
        return digest, size

    def digest_and_mode(self, path: str | Path) -> tuple[Digest, int, bool]:
        """Like `digest`, plus whether the file is executable (it shapes layer modes)."""
        st = os.stat(path)
        hit = self._lookup(str(path), st.st_size)
        if hit is not None and hit[0] == stat_key(st) and hit[1]:
            return Digest.from_hex(hit[1]), st.st_size, bool(st.st_mode & 0o111)
        return self.rehash(path)

    def rehash(self, path: str | Path) -> tuple[Digest, int, bool]:
        """`digest_and_mode` without looking the file up: for a file known to have changed."""
        with open(path, "rb") as f:
            # The stat of the file read, before and after: if it changed while we read it, its
            # digest is not remembered. A path renamed over meanwhile has another inode, which
            # the next lookup sees.
            st = os.fstat(f.fileno())
            key = stat_key(st)
            digest, size = digest_stream(f)
            if stat_key(os.fstat(f.fileno())) == key:
                self._set(str(path), (key, digest.hex))
        self.hashed += 1
        return digest, size, bool(st.st_mode & 0o111)

    def remember(self, path: str, key: StatKey, digest: Digest) -> None:
        """An entry known from elsewhere (the build record): it spares reading the file."""
        with self._lock:
            self._entries[path] = (key, digest.hex)

    # StatMemo protocol, so the content store can persist which blobs it verified.
    def get(self, path: str) -> StatKey | None:
        with self._lock:
            hit = self._entries.get(path)
            loaded = self._loaded
        if hit is None and not loaded:
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                return None
            hit = self._lookup(path, size)
        return hit[0] if hit else None

    def put(self, path: str, key: StatKey) -> None:
        self._set(path, (key, ""))

    def pop(self, path: str) -> None:
        self._set(path, None)

    def save(self) -> None:
        """Persist the changes since opening (or the last save): appended to the log, without
        reading the file; a log grown large is folded into the file instead (`compact`)."""
        if self._log is None:
            return
        with self._lock:
            changes, self._changes = self._changes, {}
        if not changes:
            return
        lines = b"".join(
            json.dumps([name, None if e is None else list(e[0]), None if e is None else e[1]],
                       separators=(",", ":")).encode() + b"\n"
            for name, e in changes.items()
        )
        try:
            size = self._log.stat().st_size
        except FileNotFoundError:
            size = 0
        if size + len(lines) > _LOG_LIMIT:
            with self._lock:
                self._changes = {**changes, **self._changes}
            self.compact()
            return
        with open(self._log, "ab+") as f:
            # After a line torn by a crash, start a new line: the torn one alone is forgotten.
            if size and os.pread(f.fileno(), 1, size - 1) != b"\n":
                lines = b"\n" + lines
            f.write(lines)

    append = save  # the name incremental builds use

    def compact(self) -> None:
        """Write every entry to the file and drop the log."""
        if self._path is None or self._log is None:
            return
        with self._lock:
            if not self._changes and not self._log.exists():
                return
            self._load()
            data = {k: [list(v[0]), v[1]] for k, v in self._entries.items()}
            self._changes = {}
        atomic_write_bytes(self._path, canonical_json(data))
        self._log.unlink(missing_ok=True)
