"""The content-addressed store on disk: blobs by sha256, written atomically, verified on read.

Layout: `<root>/cas/sha256/<hex[:2]>/<hex>` (mode 0444), and `<hex>.x` (mode 0555) for content that
must be executable: a hard link shares its inode's mode, so the two variants are separate files. Writers stream to a temp file in the same directory,
fsync, then rename, so a reader sees a whole blob or none; concurrent writers of the same blob are
harmless (same bytes). Inside `deferred_syncs` (a build's actions) blobs are written without their
fsync and `sync` makes them all durable at once: whoever names them durably (an action-cache entry)
does so only after that sync (core/executor.py, `_DurableBatch`). Blobs are made read-only so that a hard link handed out by `link_to` is not
edited by accident; `verify` re-hashes a blob only when its stat changed since it was last checked.
Bytes that rot while the stat stays the same pass `verify`: `recheck` (materialization) and
`verify_all` (`pyimg cache verify`) re-hash whatever the stat says.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from pyimg.core.digest import CHUNK, Digest
from pyimg.errors import DiskFullError

__all__ = [
    "ContentStore",
    "StatMemo",
    "StoreCheck",
    "atomic_file",
    "atomic_write_bytes",
    "fsync_path",
    "hash_file",
    "no_space_reported",
    "remove_tree",
    "sync_filesystem",
]

StatKey = tuple[int, int, int, int]  # size, mtime_ns, inode, ctime_ns (0 for blobs: _blob_key)
_BLOB_NAME = re.compile(r"^([0-9a-f]{64})(\.x)?$")


@dataclass
class StoreCheck:
    """What `ContentStore.verify_all` found: `dropped` holds (path under the root, why) of every
    blob it removed; `good` maps the (st_dev, st_ino) of each blob it found whole to its digest,
    so that other hard links to it need not be read again."""

    blobs: int = 0
    size: int = 0
    dropped: list[tuple[str, str]] = field(default_factory=list)
    good: dict[tuple[int, int], Digest] = field(default_factory=dict)


class StatMemo(Protocol):
    """Remembers the stat of files whose content was checked (see FileDigestCache)."""

    def get(self, path: str) -> StatKey | None: ...
    def put(self, path: str, key: StatKey) -> None: ...
    def pop(self, path: str) -> None: ...


class _DictMemo:
    def __init__(self) -> None:
        self._d: dict[str, StatKey] = {}

    def get(self, path: str) -> StatKey | None:
        return self._d.get(path)

    def put(self, path: str, key: StatKey) -> None:
        self._d[path] = key

    def pop(self, path: str) -> None:
        self._d.pop(path, None)


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def no_space_reported(where: Path) -> Iterator[None]:
    """Turn "no space left on device" (or over quota) inside the block into a DiskFullError
    naming `where`. Writers that use it leave no partial file behind (temp file + rename), so
    the store is consistent and usable as it is once space is freed."""
    try:
        yield
    except OSError as e:
        if e.errno not in _NO_SPACE:
            raise
        raise DiskFullError(
            f"no space left on {where} ({e.strerror}); free some space and run the command "
            "again: what pyimg stored so far is consistent"
        ) from None


def sync_filesystem(path: Path) -> None:
    """Make every write to the filesystem holding `path` durable: one syncfs(2), which costs one
    journal commit where an fsync per file costs one each (os.sync() where libc lacks syncfs)."""
    syncfs = _libc_syncfs()
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if syncfs is None or syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


@functools.cache
def _libc_syncfs() -> Any:
    """libc's syncfs, looked up on the first sync: this module is imported by every command,
    the no-op included, and importing ctypes costs it a few ms. dlopen(NULL) finds the symbol
    among the libraries already loaded; ctypes.util.find_library would start `ldconfig -p`."""
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None


def fsync_path(path: str | Path) -> None:
    """fsync the file or directory at `path` (opened read-only: fsync needs no write access)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_file(path: Path, mode: int = 0o644, sync: bool = True) -> Iterator[BinaryIO]:
    """A file to write `path` through: a temp file in the same directory, fsynced and renamed
    into place when the block ends normally, removed when it raises (a download that does not
    hash to its digest raises inside the block). A reader sees the old file or the whole new
    one; a full disk is a DiskFullError naming the directory. Without `sync` the caller makes
    it durable (`sync_filesystem`), or tolerates its loss in a crash."""
    with no_space_reported(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
                f.flush()
                if sync:
                    os.fsync(f.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            _unlink_quietly(tmp)
            raise


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644, sync: bool = True) -> None:
    """Write `data` to `path` through `atomic_file` (never half-written)."""
    with atomic_file(path, mode, sync) as f:
        f.write(data)


def remove_tree(path: Path) -> None:
    """Remove a tree that may hold read-only or unreadable directories (Go caches, a command's
    `chmod 000`): what the first pass cannot remove goes once every directory is opened up."""
    if path.is_symlink() or not path.exists():
        return  # a symlink is not followed (as shutil.rmtree refuses to)
    failed: list[str] = []
    shutil.rmtree(path, onerror=lambda func, p, exc: failed.append(p))
    if failed:
        _open_up_dirs(path)
        shutil.rmtree(path, ignore_errors=True)


def _open_up_dirs(top: Path) -> None:
    """Give the owner rwx on every directory under `top` (which is not a symlink) that it owns,
    so that their entries can be listed and removed; symlinks are never followed."""
    stack = [str(top)]
    while stack:
        d = stack.pop()
        try:
            os.chmod(d, 0o700)
            with os.scandir(d) as entries:
                stack.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
        except OSError:
            continue


def _blob_key(st: os.stat_result) -> StatKey:
    """What proves a store blob unchanged since it was verified: size, mtime and inode.

    Not ctime, unlike source files: every hard link to a blob (materializing into pyimg-out/,
    staging into a sandbox) changes its ctime, which would force a re-hash on every build. A
    blob is read-only, so changing its bytes takes a write, which moves mtime.
    """
    return (st.st_size, st.st_mtime_ns, st.st_ino, 0)


def _copy_bytes(src_fd: int, dst_fd: int, size: int) -> None:
    """Copy `size` bytes in the kernel (copy_file_range: a reflink where the filesystem has them)."""
    left = size
    try:
        while left > 0:
            n = os.copy_file_range(src_fd, dst_fd, left)
            if n == 0:
                break
            left -= n
    except OSError:
        left = -1  # not supported here (another filesystem, an old kernel): copy in user space
    if left != 0:
        os.lseek(src_fd, 0, os.SEEK_SET)
        os.lseek(dst_fd, 0, os.SEEK_SET)
        os.ftruncate(dst_fd, 0)
        while chunk := os.read(src_fd, CHUNK):
            view = memoryview(chunk)
            while view:
                view = view[os.write(dst_fd, view) :]


def _unlink_quietly(path: str | Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def hash_file(path: str | Path) -> str:
    """The sha256 hex of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _drop_corrupt(path: str | Path) -> None:
    """Remove a corrupt blob, emptying it first: every other hard link to it (pyimg-out/ of any
    workspace, trees, external repositories) then changes size and mtime, so that the stat checks
    there (the no-op record, materialization, the file-digest cache) see a change instead of
    trusting the rotten bytes. Best effort: a blob pyimg cannot write is only unlinked."""
    try:
        os.chmod(path, 0o644)
        with open(path, "r+b") as f:
            f.truncate(0)
    except OSError:
        pass
    _unlink_quietly(path)


class ContentStore:
    """Blobs by digest under `root`. Safe for several processes at once."""

    def __init__(self, root: Path, memo: StatMemo | None = None) -> None:
        self.root = root
        self._dir = root / "cas" / "sha256"
        self._dir_str = str(self._dir)
        # _blob_key() of blobs already verified; persistent when the engine
        # passes its file-digest cache, so a no-op build does not re-read every blob.
        self._verified: StatMemo = memo if memo is not None else _DictMemo()
        # Paths of blobs this process wrote, hashing the bytes on their way in: `recheck` may
        # trust those without reading them again.
        self._fresh: set[str] = set()
        # Open `deferred_syncs` blocks: while any is, blobs are written without their fsync.
        self._deferring = 0
        self._defer_lock = threading.Lock()

    @contextmanager
    def deferred_syncs(self) -> Iterator[None]:
        """Within the block, blobs are written without an fsync each: the caller calls `sync`
        before anything durable names them (an action-cache entry), and once at the end."""
        with self._defer_lock:
            self._deferring += 1
        try:
            yield
        finally:
            with self._defer_lock:
                self._deferring -= 1

    def _fsync(self, fd: int) -> None:
        if not self._deferring:
            os.fsync(fd)

    def sync(self) -> None:
        """Make every blob written so far durable (one syncfs of the store's filesystem)."""
        with no_space_reported(self.root):
            self._dir.mkdir(parents=True, exist_ok=True)
            sync_filesystem(self._dir)

    def path(self, digest: Digest, executable: bool = False) -> Path:
        return Path(self.path_str(digest, executable))

    def path_str(self, digest: Digest, executable: bool = False) -> str:
        # A plain string: this runs for every blob of every cache hit, and Path objects cost.
        return f"{self._dir_str}/{digest.hex[:2]}/{digest.hex}{'.x' if executable else ''}"

    def has(self, digest: Digest, executable: bool = False) -> bool:
        return self.path(digest, executable).is_file()

    @contextmanager
    def _writer(self) -> Iterator[tuple[BinaryIO, str]]:
        """A temp file in the store, removed unless the block committed it; a full disk while
        writing it is a DiskFullError naming the cache root."""
        with no_space_reported(self.root):
            self._dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self._dir, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    yield f, tmp
            except BaseException:
                _unlink_quietly(tmp)
                raise

    def _commit(self, tmp: str, digest: Digest, executable: bool = False) -> Path:
        dest = self.path(digest, executable)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp, 0o555 if executable else 0o444)
        # Replace unconditionally: a racing writer had the same bytes, and a corrupt blob must go.
        os.replace(tmp, dest)
        st = dest.stat()
        self._verified.put(str(dest), _blob_key(st))
        self._fresh.add(str(dest))
        return dest

    def put_bytes(self, data: bytes, executable: bool = False) -> Digest:
        digest = Digest("sha256", hashlib.sha256(data).hexdigest())
        if self.verify(digest, executable):
            return digest
        with self._writer() as (f, tmp):
            f.write(data)
            f.flush()
            self._fsync(f.fileno())
        self._commit(tmp, digest, executable)
        return digest

    def put_file(
        self, src: Path, known: Digest | None = None, link: bool = False
    ) -> tuple[Digest, bool]:
        """Store the file at `src` (its executable bit decides the variant); returns (digest, exec).

        `known` is a digest the caller trusts (it hashed the bytes as they were written, or the
        file-digest cache did). With `link`, a file the store lacks is hard-linked in instead of
        copied and hashed again: only for files pyimg owns (scratch outputs), since the store
        makes its blobs read-only and would change the mode of a user's file: an unknown digest
        is then hashed from `src`, which is linked in rather than copied.
        """
        executable = os.access(src, os.X_OK)
        if known is not None:
            if self.verify(known, executable):
                return known, executable
        elif link:
            known = Digest("sha256", hash_file(src))
            if self.verify(known, executable):
                return known, executable
        if known is not None and link:
            dest = self.path(known, executable)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp_link = dest.parent / f".tmp-link-{os.getpid()}-{known.hex[:12]}"
            try:
                _unlink_quietly(tmp_link)
                if not self._deferring:  # durable before an action-cache entry names them
                    fsync_path(src)
                os.link(src, tmp_link)
                os.chmod(tmp_link, 0o555 if executable else 0o444)
                os.replace(tmp_link, dest)
                st = dest.stat()
                self._verified.put(str(dest), _blob_key(st))
                self._fresh.add(str(dest))
                return known, executable
            except OSError:
                _unlink_quietly(tmp_link)
        h = hashlib.sha256()
        with self._writer() as (f, tmp), open(src, "rb") as s:
            while chunk := s.read(CHUNK):
                h.update(chunk)
                f.write(chunk)
            f.flush()
            self._fsync(f.fileno())
            digest = Digest("sha256", h.hexdigest())
            self._commit(tmp, digest, executable)
        return digest, executable

    def verify(self, digest: Digest, executable: bool = False) -> bool:
        """True when the blob exists with the right bytes. A corrupt blob is removed (never served)."""
        name = self.path_str(digest, executable)
        try:
            st = os.stat(name)
        except FileNotFoundError:
            return False
        key = _blob_key(st)
        if self._verified.get(name) == key:
            return True
        return self._rehash(name, digest, key)

    def _rehash(self, name: str, digest: Digest, key: StatKey) -> bool:
        if hash_file(name) != digest.hex:
            _drop_corrupt(name)
            self._verified.pop(name)
            self._fresh.discard(name)
            return False
        self._verified.put(name, key)
        return True

    def recheck(self, digest: Digest, executable: bool = False, trust_fresh: bool = False) -> bool:
        """Like `verify`, but re-hash the blob even when its stat is the one last verified (bytes
        can rot under an unchanged stat). With `trust_fresh`, a blob this process wrote is not
        read again: its bytes were hashed as they were written."""
        name = self.path_str(digest, executable)
        try:
            st = os.stat(name)
        except FileNotFoundError:
            return False
        if trust_fresh and name in self._fresh and self._verified.get(name) == _blob_key(st):
            return True
        return self._rehash(name, digest, _blob_key(st))

    def verify_all(self, jobs: int = 1) -> StoreCheck:
        """Re-hash every blob (`jobs` at a time) and drop each that is corrupt: bytes that do not
        match the name, a misplaced or unknown name, or a mode other than the variant's (0444,
        `.x` 0555). Temp files of writers at work are left alone."""
        from concurrent.futures import ThreadPoolExecutor  # here: builds never need it

        check = StoreCheck()
        blobs: list[tuple[str, Digest, bool]] = []
        for fan in sorted(self._dir.glob("*")) if self._dir.is_dir() else []:
            if fan.name.startswith(".tmp-"):
                continue  # a writer at work
            if not fan.is_dir() or fan.is_symlink():
                self._drop_checked(check, str(fan), f"cas/sha256/{fan.name}", "not a blob name")
                continue
            for name in sorted(os.listdir(fan)):
                rel = f"cas/sha256/{fan.name}/{name}"
                path = os.path.join(fan, name)
                if name.startswith(".tmp-"):
                    continue
                m = _BLOB_NAME.match(name)
                if m is None or fan.name != m.group(1)[:2] or not os.path.isfile(path):
                    self._drop_checked(check, path, rel, "not a blob name")
                    continue
                blobs.append((rel, Digest("sha256", m.group(1)), m.group(2) is not None))

        def one(item: tuple[str, Digest, bool]) -> tuple[str, os.stat_result | None, str | None]:
            rel, digest, executable = item
            name = self.path_str(digest, executable)
            try:
                st = os.stat(name)
                mode = 0o555 if executable else 0o444
                if st.st_mode & 0o7777 != mode:
                    return rel, st, f"mode {st.st_mode & 0o7777:04o}, not {mode:04o}"
                ok = hash_file(name) == digest.hex
            except FileNotFoundError:
                return rel, None, None  # removed meanwhile (another command dropped it)
            return rel, st, None if ok else "bytes do not match the digest"

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            for rel, st, problem in pool.map(one, blobs):
                if st is None:
                    continue
                check.blobs += 1
                check.size += st.st_size
                if problem is None:
                    check.good[(st.st_dev, st.st_ino)] = Digest("sha256", rel.rsplit("/", 1)[1][:64])
                else:
                    self._drop_checked(check, str(self.root / rel), rel, problem)
        return check

    def _drop_checked(self, check: StoreCheck, path: str, rel: str, why: str) -> None:
        if os.path.isdir(path) and not os.path.islink(path):
            remove_tree(Path(path))
        else:
            _drop_corrupt(path)
        self._verified.pop(path)
        self._fresh.discard(path)
        check.dropped.append((rel, why))

    def read_bytes(self, digest: Digest) -> bytes:
        if not self.verify(digest):
            raise KeyError(str(digest))
        return self.path(digest).read_bytes()

    def copy_to(self, digest: Digest, dest: Path | str, executable: bool = False,
                overwrite: bool = False) -> None:
        """A private copy of a blob at `dest`, with the blob's mode and mtime, never its inode.

        For places where the reader may write (a command's execroot): changing the copy can never
        reach the store. `dest` must not exist, unless `overwrite`: then it is a regular file of
        ours, with one link, whose inode and blocks are reused: written over from the start, then
        cut to size (truncating it to nothing first would free its blocks, and freeing blocks
        costs a synchronous discard on a disk mounted with `discard`: a fifth of a cold build's
        worker time here, docs/benchmarks.md "Recycled inodes").
        """
        src = self.path_str(digest, executable)
        st = os.stat(src)
        if overwrite:
            os.chmod(dest, 0o600)  # the file's last user may have left it read-only
        with open(src, "rb") as s, open(dest, "r+b" if overwrite else "xb") as d:
            _copy_bytes(s.fileno(), d.fileno(), st.st_size)
            if overwrite:
                d.truncate(st.st_size)
        os.chmod(dest, st.st_mode & 0o7777)
        os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))

    def link_to(self, digest: Digest, dest: Path, executable: bool = False) -> None:
        """Materialize a blob at `dest` (hard link, else copy), replacing what was there atomically."""
        src = self.path(digest, executable)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f".tmp-{os.getpid()}-{dest.name}"
        _unlink_quietly(tmp)
        try:
            os.link(src, tmp)
        except OSError:
            try:
                shutil.copy2(src, tmp)
            except BaseException:
                _unlink_quietly(tmp)  # a full disk must not leave half a copy behind
                raise
        os.replace(tmp, dest)
