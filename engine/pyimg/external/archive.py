"""Safe extraction of tar (plain, gzip, zstd) and zip archives into a fresh directory.

An archive is untrusted input: extraction refuses absolute paths, `..`, symlinks and hard links
that point outside the root, device and fifo entries, and duplicate entries, naming the archive
and the member. Only regular files, directories and in-root links are created; modes keep only
the executable bit (files 0644/0755), so extraction never depends on the umask or on the archive's
ownership. An archive that would unpack to more than a limit of bytes or entries (a "zip
bomb", or simply far more than expected) is refused as soon as it passes the limit.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from pyimg.core.streams import ByteReader
from pyimg.errors import UserInputError

__all__ = ["MAX_UNPACKED_BYTES", "MAX_UNPACKED_FILES", "UnsafeArchiveError", "extract_archive"]

# Defaults of http_archive's max_unpacked_bytes / max_unpacked_files (docs/external-inputs.md).
MAX_UNPACKED_BYTES = 4 << 30
MAX_UNPACKED_FILES = 250_000


class UnsafeArchiveError(UserInputError):
    """An archive member pyimg refuses to extract (or an archive it cannot read)."""


@dataclass(frozen=True)
class _Member:
    name: str  # normalized, relative, after strip_prefix
    raw: str  # as written in the archive
    kind: str  # "file", "dir", "symlink", "hardlink"
    executable: bool = False
    target: str = ""  # link target (hard links: normalized member path)


def _norm(archive: str, raw: str) -> str:
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":"):
        raise UnsafeArchiveError(f"archive {archive}: member '{raw}' has an absolute path")
    parts = [p for p in raw.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"archive {archive}: member '{raw}' has a '..' path component")
    return "/".join(parts)


def _strip(name: str, prefix: str) -> str | None:
    if not prefix:
        return name
    if name == prefix:
        return ""
    if name.startswith(prefix + "/"):
        return name[len(prefix) + 1 :]
    return None


def _open_tar(path: Path, archive: str, stack: ExitStack) -> tarfile.TarFile:
    with open(path, "rb") as f:
        magic = f.read(4)
    try:
        if magic == b"\x28\xb5\x2f\xfd":
            import zstandard

            raw = stack.enter_context(open(path, "rb"))
            reader = stack.enter_context(zstandard.ZstdDecompressor().stream_reader(raw))
            return stack.enter_context(tarfile.open(fileobj=reader, mode="r|"))
        return stack.enter_context(tarfile.open(path, mode="r:*"))
    except tarfile.TarError as e:
        raise UnsafeArchiveError(
            f"archive {archive}: not a readable tar or zip file ({e})"
        ) from None


def _tar_members(tar: tarfile.TarFile, archive: str) -> Iterator[tuple[tarfile.TarInfo, str]]:
    for info in tar:
        if info.isdev() or info.isfifo() or info.ischr() or info.isblk():
            raise UnsafeArchiveError(
                f"archive {archive}: member '{info.name}' is a device or fifo, which pyimg "
                "does not extract"
            )
        if not (info.isfile() or info.isdir() or info.issym() or info.islnk()):
            raise UnsafeArchiveError(
                f"archive {archive}: member '{info.name}' has an unsupported type"
            )
        yield info, _norm(archive, info.name)


def extract_archive(
    path: Path,
    dest: Path,
    archive: str,
    strip_prefix: str = "",
    max_bytes: int = MAX_UNPACKED_BYTES,
    max_files: int = MAX_UNPACKED_FILES,
) -> int:
    """Extract `path` (tar, tar.gz, tgz, tar.zst or zip) into `dest`, which must not exist.

    `archive` names the archive in errors (its URL). Returns the number of entries written.
    More than `max_bytes` of file content or `max_files` entries is an error. On any error
    `dest` is removed: a partial tree is never left behind.
    """
    if dest.exists():
        raise FileExistsError(dest)
    dest.mkdir(parents=True)
    try:
        with open(path, "rb") as f:
            is_zip = f.read(4) == b"PK\x03\x04"
        w = _Writer(dest, archive, strip_prefix, max_bytes, max_files)
        n = _extract_zip(path, w) if is_zip else _extract_tar(path, w)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return n


class _Writer:
    def __init__(
        self, dest: Path, archive: str, strip_prefix: str, max_bytes: int, max_files: int
    ) -> None:
        self.dest = dest
        self.archive = archive
        self.prefix = strip_prefix.strip("/")
        self.seen: set[str] = set()
        self.links: list[_Member] = []
        self.matched = False
        self.count = 0
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.written = 0

    def place(self, raw: str, name: str) -> str | None:
        """The member's path under `dest` after strip_prefix (None: outside the prefix)."""
        if name in self.seen and name:
            raise UnsafeArchiveError(f"archive {self.archive}: duplicate entry '{raw}'")
        self.seen.add(name)
        if len(self.seen) > self.max_files:
            raise UnsafeArchiveError(
                f"archive {self.archive}: more than {self.max_files:,} entries, the limit "
                "(max_unpacked_files; raise it if you expect that many)"
            )
        rel = _strip(name, self.prefix)
        if rel is None:
            return None
        self.matched = True
        return rel

    def inside(self, rel: str, target: str) -> bool:
        """Does a link at `rel` to `target` stay inside the root?"""
        if target.startswith("/"):
            return False
        joined = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
        return joined != ".." and not joined.startswith("../")

    def write_file(self, rel: str, data: ByteReader, executable: bool) -> None:
        out = self.dest / rel
        self._parent(out, rel)
        with open(out, "wb") as f:
            # Counted as written, not as declared: a header can lie about the size.
            while chunk := data.read(1 << 20):
                self.written += len(chunk)
                if self.written > self.max_bytes:
                    raise UnsafeArchiveError(
                        f"archive {self.archive}: unpacks to more than {self.max_bytes:,} bytes, "
                        "the limit (max_unpacked_bytes; raise it if you expect that much)"
                    )
                f.write(chunk)
        os.chmod(out, 0o755 if executable else 0o644)
        self.count += 1

    def _parent(self, out: Path, rel: str) -> None:
        parent = out.parent
        # A symlinked directory on the way would let a later member escape the root.
        p = parent
        while p != self.dest and p != p.parent:
            if p.is_symlink():
                raise UnsafeArchiveError(
                    f"archive {self.archive}: member '{rel}' would be written through a symlink"
                )
            p = p.parent
        parent.mkdir(parents=True, exist_ok=True)

    def finish(self) -> int:
        if self.prefix and not self.matched:
            raise UnsafeArchiveError(
                f"archive {self.archive}: strip_prefix '{self.prefix}' matches no entry"
            )
        # Links last, in archive order: their targets exist by now.
        for m in self.links:
            out = self.dest / m.name
            self._parent(out, m.name)
            if out.exists() or out.is_symlink():
                raise UnsafeArchiveError(
                    f"archive {self.archive}: link '{m.raw}' conflicts with another entry"
                )
            if m.kind == "symlink":
                os.symlink(m.target, out)
            else:
                src = self.dest / m.target
                if not src.is_file() or src.is_symlink():
                    raise UnsafeArchiveError(
                        f"archive {self.archive}: hard link '{m.raw}' points at '{m.target}', "
                        "which is not a regular file of the archive"
                    )
                os.link(src, out)
            self.count += 1
        return self.count


def _extract_tar(path: Path, w: _Writer) -> int:
    dest, archive = w.dest, w.archive
    with ExitStack() as stack:
        tar = _open_tar(path, archive, stack)
        try:
            for info, name in _tar_members(tar, archive):
                rel = w.place(info.name, name)
                if rel is None:
                    continue
                if info.issym() or info.islnk():
                    if not rel:
                        raise UnsafeArchiveError(
                            f"archive {archive}: member '{info.name}' is a link at the root"
                        )
                    if info.issym():
                        if not w.inside(rel, info.linkname):
                            raise UnsafeArchiveError(
                                f"archive {archive}: symlink '{info.name}' points outside the "
                                f"archive root ('{info.linkname}')"
                            )
                        w.links.append(_Member(rel, info.name, "symlink", target=info.linkname))
                    else:
                        target = _strip(_norm(archive, info.linkname), w.prefix)
                        if target is None or not target:
                            raise UnsafeArchiveError(
                                f"archive {archive}: hard link '{info.name}' points outside the "
                                f"archive root ('{info.linkname}')"
                            )
                        w.links.append(_Member(rel, info.name, "hardlink", target=target))
                elif info.isdir():
                    if rel:
                        out = dest / rel
                        w._parent(out, rel)
                        out.mkdir(exist_ok=True)
                else:
                    if not rel:
                        raise UnsafeArchiveError(
                            f"archive {archive}: strip_prefix '{w.prefix}' names a file"
                        )
                    f = tar.extractfile(info)
                    assert f is not None
                    w.write_file(rel, f, bool(info.mode & 0o111))
        except (tarfile.TarError, EOFError, OSError) as e:
            if isinstance(e, UnsafeArchiveError):
                raise
            raise UnsafeArchiveError(f"archive {archive}: cannot read it ({e})") from None
    return w.finish()


def _extract_zip(path: Path, w: _Writer) -> int:
    dest, archive = w.dest, w.archive
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise UnsafeArchiveError(f"archive {archive}: not a readable zip file ({e})") from None
    with zf:
        for info in zf.infolist():
            name = _norm(archive, info.filename)
            rel = w.place(info.filename, name)
            if rel is None:
                continue
            mode = info.external_attr >> 16
            if info.is_dir():
                if rel:
                    out = dest / rel
                    w._parent(out, rel)
                    out.mkdir(exist_ok=True)
                continue
            if stat.S_ISLNK(mode):
                target = zf.read(info).decode("utf-8", "replace")
                if not w.inside(rel, target):
                    raise UnsafeArchiveError(
                        f"archive {archive}: symlink '{info.filename}' points outside the "
                        f"archive root ('{target}')"
                    )
                w.links.append(_Member(rel, info.filename, "symlink", target=target))
                continue
            if stat.S_IFMT(mode) and not stat.S_ISREG(mode):
                raise UnsafeArchiveError(
                    f"archive {archive}: member '{info.filename}' is a device or fifo, which "
                    "pyimg does not extract"
                )
            if not rel:
                raise UnsafeArchiveError(
                    f"archive {archive}: strip_prefix '{w.prefix}' names a file"
                )
            with zf.open(info) as f:
                w.write_file(rel, f, bool(mode & 0o111))
    return w.finish()
