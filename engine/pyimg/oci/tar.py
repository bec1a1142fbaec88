"""The canonical tar writer: sorted, owner- and time-normalized PAX archives, streamed to a file."""

from __future__ import annotations

import os
import posixpath
import stat
import tarfile
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from pyimg.core.streams import ByteReader, ByteWriter
from pyimg.errors import UserInputError
from pyimg.oci.compress import open_decompressed, read_exact

__all__ = [
    "DEFAULT_DIR_MODE",
    "DEFAULT_EXEC_MODE",
    "DEFAULT_FILE_MODE",
    "KINDS",
    "OPAQUE_WHITEOUT",
    "WHITEOUT_PREFIX",
    "TarEntry",
    "entries_from_tar",
    "normalize_path",
    "opaque_whiteout",
    "whiteout",
    "write_tar",
]

DEFAULT_FILE_MODE = 0o644
DEFAULT_EXEC_MODE = 0o755
DEFAULT_DIR_MODE = 0o755
_SYMLINK_MODE = 0o777
KINDS = ("file", "dir", "symlink", "hardlink")
WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"
_BLOCK = 512
_COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class TarEntry:
    """One entry of a layer. Content of a `file` comes from `data`, or from `size` bytes of `src`
    starting at `offset` (a plain file, or a member of an uncompressed tar). `target` is a
    symlink's target (stored verbatim) or a hard link's in-layer path. `mode`, `uid`, `gid` of
    None take the defaults (0644 files, 0755 directories and executable files, 0777 symlinks;
    the archive's owner)."""

    path: str
    kind: str = "file"
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    src: Path | None = None
    offset: int = 0
    size: int | None = None
    data: bytes | None = None
    target: str = ""
    executable: bool = False
    # Opens a stream yielding exactly `size` bytes (e.g. a decompressing reader); the writer
    # closes it. Excluded from equality: it is a way to read, not part of the entry.
    opener: Callable[[], AbstractContextManager[ByteReader]] | None = field(
        default=None, compare=False
    )


def normalize_path(path: str, what: str = "path") -> str:
    """An in-layer path without leading './' or '/'-runs; absolute paths and '..' are errors."""
    if not isinstance(path, str) or not path:
        raise UserInputError(f"{what}: empty path")
    if path.startswith("/"):
        raise UserInputError(f"{what}: absolute path {path!r} (paths in a layer are relative)")
    if "\x00" in path:
        raise UserInputError(f"{what}: NUL byte in path {path!r}")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UserInputError(f"{what}: path {path!r} contains '..'")
    if not parts:
        raise UserInputError(f"{what}: path {path!r} names the layer root")
    return "/".join(parts)


def whiteout(path: str) -> TarEntry:
    """The entry that deletes `path` of a lower layer: an empty file `dir/.wh.name`."""
    norm = normalize_path(path, "remove")
    parent, name = posixpath.split(norm)
    return TarEntry(posixpath.join(parent, WHITEOUT_PREFIX + name), "file", data=b"")


def opaque_whiteout(directory: str) -> TarEntry:
    """The entry that hides every lower-layer entry under `directory`."""
    return TarEntry(posixpath.join(normalize_path(directory), OPAQUE_WHITEOUT), "file", data=b"")


def _key(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def _same_dir(a: TarEntry, b: TarEntry, uid: int, gid: int) -> bool:
    """Two declarations of one directory with the same effective mode and owner are one entry."""

    def effective(e: TarEntry) -> tuple[int, int, int]:
        mode = DEFAULT_DIR_MODE if e.mode is None else e.mode & 0o7777
        return (mode, uid if e.uid is None else e.uid, gid if e.gid is None else e.gid)

    return a.kind == b.kind == "dir" and effective(a) == effective(b)


def _plan(entries: Iterable[TarEntry], uid: int, gid: int) -> list[TarEntry]:
    """Normalize, reject duplicates, add parents, resolve hard links; sorted bytewise by path."""
    by_path: dict[str, TarEntry] = {}
    for entry in entries:
        if entry.kind not in KINDS:
            raise UserInputError(f"{entry.path}: unknown entry type {entry.kind!r}")
        path = normalize_path(entry.path)
        entry = replace(entry, path=path)
        if entry.kind == "hardlink":
            entry = replace(entry, target=normalize_path(entry.target, f"hard link {path}"))
        if entry.kind == "symlink" and not entry.target:
            raise UserInputError(f"{path}: symlink without a target")
        if entry.kind == "file" and entry.data is None and entry.src is None and not entry.opener:
            raise UserInputError(f"{path}: file without content")
        old = by_path.get(path)
        if old is not None:
            if _same_dir(old, entry, uid, gid):
                continue
            raise UserInputError(f"duplicate path in layer: {path!r}")
        by_path[path] = entry

    # Parent directories, added as 0755 directories owned by the archive's owner.
    for path in list(by_path):
        parent = posixpath.dirname(path)
        while parent:
            existing = by_path.get(parent)
            if existing is None:
                by_path[parent] = TarEntry(parent, "dir")
            elif existing.kind != "dir":
                raise UserInputError(
                    f"{parent!r} is a {existing.kind} in the layer but {path!r} is under it"
                )
            else:
                break
            parent = posixpath.dirname(parent)

    # Hard links are symmetric: every path of a group names the same inode. Extraction needs the
    # content before the links, so the bytewise-first path of each group holds the content and
    # the others link to it, whatever order the user declared them in.
    def root_of(path: str, seen: tuple[str, ...] = ()) -> str:
        entry = by_path.get(path)
        if entry is None:
            raise UserInputError(f"hard link {seen[-1]!r}: target {path!r} is not in the layer")
        if entry.kind == "hardlink":
            if path in seen:
                raise UserInputError(f"hard link cycle through {path!r}")
            return root_of(entry.target, (*seen, path))
        if entry.kind != "file":
            raise UserInputError(
                f"hard link {seen[-1]!r}: target {path!r} is a {entry.kind}, not a file"
            )
        return path

    groups: dict[str, list[str]] = {}
    for path, entry in by_path.items():
        if entry.kind == "hardlink":
            groups.setdefault(root_of(path), []).append(path)
    for root, links in groups.items():
        members = sorted([root, *links], key=_key)
        holder = members[0]
        content = by_path[root]
        by_path[holder] = replace(content, path=holder)
        for member in members[1:]:
            by_path[member] = TarEntry(
                member,
                "hardlink",
                mode=content.mode,
                uid=content.uid,
                gid=content.gid,
                target=holder,
            )

    return [by_path[p] for p in sorted(by_path, key=_key)]


def _header(entry: TarEntry, *, size: int, mtime: int, uid: int, gid: int) -> bytes:
    info = tarfile.TarInfo(entry.path)
    if entry.kind == "file":
        info.type = tarfile.REGTYPE
        default = DEFAULT_EXEC_MODE if entry.executable else DEFAULT_FILE_MODE
        info.size = size
    elif entry.kind == "dir":
        info.type = tarfile.DIRTYPE
        default = DEFAULT_DIR_MODE
    elif entry.kind == "symlink":
        info.type = tarfile.SYMTYPE
        info.linkname = entry.target
        default = _SYMLINK_MODE
    else:
        info.type = tarfile.LNKTYPE
        info.linkname = entry.target
        default = DEFAULT_FILE_MODE
    info.mode = (entry.mode if entry.mode is not None else default) & 0o7777
    info.uid = entry.uid if entry.uid is not None else uid
    info.gid = entry.gid if entry.gid is not None else gid
    info.uname = ""
    info.gname = ""
    # An int mtime keeps tarfile from emitting a PAX mtime record (it does so for floats).
    info.mtime = int(mtime)
    # PAX throughout: long and non-ASCII names and link targets get a `path`/`linkpath` record,
    # never atime/ctime.
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _copy_content(entry: TarEntry, out: ByteWriter, size: int) -> None:
    stream: AbstractContextManager[ByteReader]
    if entry.opener is not None:
        stream = entry.opener()
    else:
        assert entry.src is not None
        src = open(entry.src, "rb")  # noqa: SIM115 (closed below)
        if entry.offset:
            src.seek(entry.offset)
        stream = src
    with stream as f:
        left = size
        while left:
            chunk = read_exact(f, min(left, _COPY_CHUNK))
            if not chunk:
                raise UserInputError(f"{entry.path}: source {entry.src} shrank while being read")
            out.write(chunk)
            left -= len(chunk)


def write_tar(
    out: ByteWriter,
    entries: Iterable[TarEntry],
    *,
    mtime: int = 0,
    uid: int = 0,
    gid: int = 0,
    check_cancelled: Callable[[], None] | None = None,
) -> int:
    """Write the canonical tar of `entries` to `out`; returns the number of bytes written.

    Entries are sorted bytewise by path, parents are added (0755), every header carries `mtime`,
    owner `uid:gid` unless the entry declares one, and empty user/group names. File contents are
    streamed from their sources, never held in memory. Ends with two zero blocks (no record
    padding). Duplicate paths, absolute paths and '..' raise UserInputError naming the path.
    `out` is not closed.
    """
    if not isinstance(mtime, int) or mtime < 0:
        raise UserInputError(f"mtime: expected a non-negative integer, got {mtime!r}")
    written = 0
    for i, entry in enumerate(_plan(entries, uid, gid)):
        if check_cancelled is not None and i % 256 == 0:
            check_cancelled()
        size = 0
        if entry.kind == "file":
            if entry.data is not None:
                size = len(entry.data)
            elif entry.size is not None:
                size = entry.size
            elif entry.opener is not None:
                raise ValueError(f"{entry.path}: an entry with an opener needs a size")
            else:
                assert entry.src is not None
                size = os.stat(entry.src).st_size
        header = _header(entry, size=size, mtime=mtime, uid=uid, gid=gid)
        out.write(header)
        written += len(header)
        if entry.kind == "file" and size:
            if entry.data is not None:
                out.write(entry.data)
            else:
                _copy_content(entry, out, size)
            pad = -size % _BLOCK
            out.write(b"\0" * pad)
            written += size + pad
    out.write(b"\0" * (2 * _BLOCK))
    return written + 2 * _BLOCK


def entries_from_tar(path: Path, scratch_dir: Path, what: str = "tar") -> list[TarEntry]:
    """The entries of an existing tar (plain, gzip or zstd), to merge into a new layer.

    Content is referenced by offset, so a compressed tar is first decompressed into a file in
    `scratch_dir` (which the caller removes). Mode, owner, type and link targets are kept;
    mtimes, names of owners and PAX extras are dropped. Device files and fifos are an error.
    """
    with open(path, "rb") as f:
        reader, kind = open_decompressed(f)
        if kind != "none":
            fd, tmp = _mkstemp(scratch_dir)
            with os.fdopen(fd, "wb") as dst:
                while chunk := read_exact(reader, _COPY_CHUNK):
                    dst.write(chunk)
            path = Path(tmp)
    out: list[TarEntry] = []
    try:
        with tarfile.open(path, "r:") as tf:
            for m in tf:
                if m.name in (".", "./", ""):
                    continue
                name = normalize_path(m.name, f"{what} member")
                entry = partial(TarEntry, mode=stat.S_IMODE(m.mode), uid=m.uid, gid=m.gid)
                if m.isreg():
                    out.append(entry(name, "file", src=path, offset=m.offset_data, size=m.size))
                elif m.isdir():
                    out.append(entry(name, "dir"))
                elif m.issym():
                    out.append(entry(name, "symlink", target=m.linkname))
                elif m.islnk():
                    out.append(entry(name, "hardlink", target=m.linkname))
                else:
                    raise UserInputError(f"{what}: {name!r} is a device, fifo or unknown entry")
    except tarfile.TarError as e:
        raise UserInputError(f"{what}: not a valid tar archive: {e}") from None
    return out


def _mkstemp(directory: Path) -> tuple[int, str]:
    import tempfile

    return tempfile.mkstemp(dir=directory, suffix=".tar")
