"""Debian packages (`.deb`) decoded into layer entries, once per package: the decoder and the
repository cache's derived entries (`<cache root>/debs/`), keyed by the `.deb`'s sha256.

A `.deb` is an `ar` archive of `debian-binary`, `control.tar.*` and `data.tar.*`. Decoding it
(mostly: decompressing xz) was a third of a cold Debian base's layer, done again by every
action that read the package. `DebCache` does it once: the uncompressed `data.tar`, byte for
byte as the package holds it, goes into the content store, and a small self-checked index entry
beside the store names it with the control fields and every member's offset, so a layer reads
file content straight out of that blob. The layer's bytes are those of a fresh decode, since the
offsets point into the same uncompressed bytes (docs/cookbook-debian.md, "The repository cache").
"""

from __future__ import annotations

import base64
import bz2
import hashlib
import io
import json
import lzma
import os
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

from pyimg.core.cas import ContentStore, atomic_write_bytes
from pyimg.core.digest import Digest, canonical_json
from pyimg.core.streams import ByteWriter
from pyimg.errors import UserInputError
from pyimg.oci.tar import TarEntry, entries_from_tar, normalize_path

__all__ = [
    "DEBIAN_ARCHITECTURES",
    "DEB_CACHE_DIR",
    "DebCache",
    "UnpackedDeb",
    "ar_members",
    "read_deb",
]

# Where derived entries live under a cache root (beside `cas/`): `debs/<sha256 of the .deb>.json`.
DEB_CACHE_DIR = "debs"
# The version of the derived entries' format: an entry of another version is decoded again.
_FORMAT = 1
_AR_MAGIC = b"!<arch>\n"
_AR_HEADER = 60
_CHUNK = 1 << 20

# Debian's architecture names and the OCI (architecture, variant) each is (as rules/private/deb.bzl
# maps the names deb_index gives `.deb` files).
DEBIAN_ARCHITECTURES = {
    "amd64": ("amd64", ""),
    "arm64": ("arm64", ""),
    "armhf": ("arm", "v7"),
    "armel": ("arm", "v5"),
    "i386": ("386", ""),
    "ppc64el": ("ppc64le", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
    "mips64el": ("mips64le", ""),
    "loong64": ("loong64", ""),
}


@dataclass(frozen=True)
class _Member:
    """One member of an `ar` archive: its name and where its bytes are in the file."""

    name: str
    offset: int
    size: int


def ar_members(f: BinaryIO, what: str) -> list[_Member]:
    """The members of the `ar` archive `f` (the container format of a `.deb`)."""
    if f.read(len(_AR_MAGIC)) != _AR_MAGIC:
        raise UserInputError(f"{what}: not a Debian package (no 'ar' archive magic)")
    members: list[_Member] = []
    offset = len(_AR_MAGIC)
    while True:
        f.seek(offset)
        header = f.read(_AR_HEADER)
        if not header:
            return members
        if len(header) != _AR_HEADER or header[58:60] != b"`\n":
            raise UserInputError(f"{what}: truncated or corrupt 'ar' header at byte {offset}")
        # GNU ar ends names with '/'; dpkg-deb writes them without. Both are fine.
        name = header[0:16].decode("ascii", "replace").rstrip(" ").rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError:
            raise UserInputError(f"{what}: bad size in the 'ar' header of {name!r}") from None
        members.append(_Member(name, offset + _AR_HEADER, size))
        offset += _AR_HEADER + size + (size & 1)


def _decompressor(name: str, what: str) -> Callable[[bytes], bytes]:
    """A function decompressing successive chunks of the member `name` (by its suffix)."""
    suffix = name.rpartition(".")[2] if name.count(".") >= 2 else ""
    if suffix == "":
        return lambda chunk: chunk
    if suffix == "gz":
        return zlib.decompressobj(wbits=47).decompress
    if suffix == "xz":
        return lzma.LZMADecompressor().decompress
    if suffix == "zst":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress
    if suffix == "bz2":
        return bz2.BZ2Decompressor().decompress
    raise UserInputError(f"{what}: {name}: unsupported compression {suffix!r}")


def _member_named(members: list[_Member], stem: str, what: str) -> _Member:
    found = [m for m in members if m.name == stem or m.name.startswith(stem + ".")]
    if len(found) != 1:
        raise UserInputError(f"{what}: expected one {stem}.* member, found {[m.name for m in members]}")
    return found[0]


def _decompressed_chunks(f: BinaryIO, member: _Member, what: str) -> Iterator[bytes]:
    decompress = _decompressor(member.name, what)
    f.seek(member.offset)
    left = member.size
    try:
        while left:
            chunk = f.read(min(left, _CHUNK))
            if not chunk:
                raise UserInputError(f"{what}: {member.name} is truncated")
            left -= len(chunk)
            yield decompress(chunk)
    except (lzma.LZMAError, zlib.error, OSError, ValueError) as e:
        raise UserInputError(f"{what}: {member.name}: corrupt compressed data ({e})") from None


@dataclass(frozen=True)
class UnpackedDeb:
    """One `.deb`, read: its control paragraph, md5sums and data entries (whose content is in
    the file each entry's `src` names)."""

    name: str
    architecture: str  # the control file's `Architecture` ("all" for any architecture)
    control: bytes  # the control file as the package ships it
    md5sums: bytes | None
    entries: list[TarEntry]


def _decode(path: Path, data_out: ByteWriter, what: str) -> tuple[bytes, bytes | None]:
    """Write the uncompressed data.tar of the `.deb` at `path` to `data_out`; returns the
    control file and md5sums."""
    with open(path, "rb") as f:
        members = ar_members(f, what)
        if not members or members[0].name != "debian-binary":
            raise UserInputError(f"{what}: not a Debian package (no leading debian-binary member)")
        control_tar = b"".join(_decompressed_chunks(f, _member_named(members, "control.tar", what), what))
        for chunk in _decompressed_chunks(f, _member_named(members, "data.tar", what), what):
            data_out.write(chunk)
    return _control_files(control_tar, what)


def _checked(control: bytes, md5sums: bytes | None, entries: list[TarEntry],
             what: str) -> UnpackedDeb:
    """The package, once its control fields and hard links are checked."""
    name = _package_name(control, what)
    architecture = _field(control.decode("utf-8"), "Architecture")
    what = f"{what} (package {name})"
    for entry in entries:
        if entry.kind == "hardlink":
            normalize_path(entry.target, f"{what}: hard link {entry.path!r}")
    return UnpackedDeb(name, architecture, control, md5sums, entries)


def read_deb(path: Path, scratch: Path, what: str) -> UnpackedDeb:
    """Read the `.deb` at `path`; its data tar is decompressed into a file under `scratch` (no
    cache: `DebCache.read` keeps the decoded package)."""
    with tempfile.NamedTemporaryFile(dir=scratch, suffix=".tar", delete=False) as plain:
        control, md5sums = _decode(path, plain, what)
    package = _package_name(control, what)
    entries = entries_from_tar(Path(plain.name), scratch, what=f"{what} (package {package})")
    return _checked(control, md5sums, entries, what)


def _package_name(control: bytes, what: str) -> str:
    name = _field(control.decode("utf-8"), "Package")
    if not name or "/" in name or name.startswith("."):
        raise UserInputError(f"{what}: control file has no valid 'Package' field")
    return name


def _control_files(control_tar: bytes, what: str) -> tuple[bytes, bytes | None]:
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(control_tar), mode="r:") as tf:
            for m in tf:
                name = m.name.removeprefix("./")
                if name in ("control", "md5sums") and m.isreg():
                    data = tf.extractfile(m)
                    assert data is not None
                    found[name] = data.read()
    except tarfile.TarError as e:
        raise UserInputError(f"{what}: control.tar is not a valid tar archive: {e}") from None
    if "control" not in found:
        raise UserInputError(f"{what}: control.tar has no 'control' file")
    try:
        found["control"].decode("utf-8")
    except UnicodeDecodeError:
        raise UserInputError(f"{what}: the control file is not UTF-8") from None
    return found["control"], found.get("md5sums")


def _field(control: str, name: str) -> str:
    for line in control.splitlines():
        key, sep, value = line.partition(":")
        if sep and key == name:
            return value.strip()
    return ""


# -- the derived entries ----------------------------------------------------------------------


def _blob_stat(path: str) -> list[int] | None:
    """What says a blob is the one an entry was written with (size, mtime, inode), as the
    content store's own memo of verified blobs; None when it is gone."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


class DebCache:
    """Decoded `.deb`s by the sha256 of the package, in the repository cache of `cas`.

    An entry is `debs/<hex>.json`: canonical JSON of {"body": ..., "sha256": sha256 of the
    body's canonical JSON}, written atomically after the data blob it names is in the store. It
    is served only when its checksum holds, its format is this one and its data blob is there
    with the size, mtime and inode it had when it was checked (else the blob is re-hashed); an
    entry that fails is decoded again from the `.deb`, never served. `pyimg cache verify`
    re-hashes the blobs and drops the entries whose checksum or blob fails (`verify_all`).
    Safe for several threads and processes: two decoding one package write the same bytes.
    """

    def __init__(self, cas: ContentStore) -> None:
        self.cas = cas
        self.dir = cas.root / DEB_CACHE_DIR

    def entry_path(self, deb: Digest) -> Path:
        return self.dir / f"{deb.hex}.json"

    def read(self, path: Path, deb: Digest, what: str) -> UnpackedDeb:
        """The package at `path`, whose bytes have the sha256 `deb`: from its entry when one is
        whole, else decoded now and kept."""
        found = self._load(deb, what)
        if found is not None:
            return found
        return self._decode_and_keep(path, deb, what)

    def _load(self, deb: Digest, what: str) -> UnpackedDeb | None:
        body = self._body(self.entry_path(deb))
        if body is None or body.get("deb") != deb.hex:
            return None
        try:
            data = Digest("sha256", body["data"])
            blob = self.cas.path_str(data)
            stat = _blob_stat(blob)
            if stat is None:
                return None
            if stat != body["stat"]:
                # Not the file the entry was written with (replaced, truncated, touched): its
                # bytes must hash to the name before any is served.
                if stat[0] != body["size"] or not self.cas.recheck(data):
                    return None
                body = {**body, "stat": _blob_stat(blob)}
                try:
                    self._write(deb, body)  # so that the next read need not re-hash it
                except OSError:
                    pass  # a cache it cannot write: the entry is still good to serve
            src = Path(blob)
            entries = [
                TarEntry(p, kind, mode=mode, uid=uid, gid=gid, target=target,
                         **({"src": src, "offset": offset, "size": size} if kind == "file" else {}))
                for p, kind, mode, uid, gid, offset, size, target in body["entries"]
            ]
            md5sums = body["md5sums"]
            return UnpackedDeb(
                body["name"], body["architecture"], base64.b64decode(body["control"]),
                None if md5sums is None else base64.b64decode(md5sums), entries)
        except (KeyError, TypeError, ValueError):
            return None  # a checksummed entry of a format this code does not read: made again

    @staticmethod
    def _body(path: Path) -> dict[str, Any] | None:
        """The body of the entry at `path` when its checksum holds and its format is this one."""
        try:
            outer = json.loads(path.read_bytes())
            body = outer["body"]
            if hashlib.sha256(canonical_json(body)).hexdigest() != outer["sha256"]:
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not isinstance(body, dict) or body.get("format") != _FORMAT:
            return None
        return body

    def _write(self, deb: Digest, body: dict[str, Any]) -> None:
        digest = hashlib.sha256(canonical_json(body)).hexdigest()
        atomic_write_bytes(self.entry_path(deb), canonical_json({"body": body, "sha256": digest}))

    def _decode_and_keep(self, path: Path, deb: Digest, what: str) -> UnpackedDeb:
        self.dir.mkdir(parents=True, exist_ok=True)
        # Beside the store (one file system): the data tar is hard-linked in, never copied.
        with tempfile.TemporaryDirectory(dir=self.dir, prefix=".tmp-") as tmp:
            plain = Path(tmp) / "data.tar"
            with open(plain, "wb") as raw:
                hashing = _HashingFile(raw)
                control, md5sums = _decode(path, hashing, what)
            package = _package_name(control, what)
            entries = entries_from_tar(plain, Path(tmp), what=f"{what} (package {package})")
            unpacked = _checked(control, md5sums, entries, what)
            data = Digest("sha256", hashing.hash.hexdigest())
            self.cas.put_file(plain, known=data, link=True)
        blob = self.cas.path_str(data)
        rows = [[e.path, e.kind, e.mode, e.uid, e.gid, e.offset if e.kind == "file" else 0,
                 e.size if e.kind == "file" else 0, e.target] for e in unpacked.entries]
        body = {
            "format": _FORMAT, "deb": deb.hex, "name": unpacked.name,
            "architecture": unpacked.architecture,
            "control": base64.b64encode(control).decode("ascii"),
            "md5sums": None if md5sums is None else base64.b64encode(md5sums).decode("ascii"),
            "data": data.hex, "size": hashing.size, "stat": _blob_stat(blob), "entries": rows,
        }
        self._write(deb, body)  # last: an entry names only a blob already in the store
        src = Path(blob)
        return replace(unpacked, entries=[
            replace(e, src=src) if e.kind == "file" else e for e in unpacked.entries])

    def verify_all(self) -> tuple[int, list[tuple[str, str]]]:
        """Check every entry (run after the store's own `verify_all`, which re-hashed the
        blobs): drop each whose checksum fails or whose data blob is gone. Returns the number
        checked and the dropped ones as (path under the cache root, why)."""
        checked, dropped = 0, []
        for path in sorted(self.dir.glob("*.json")) if self.dir.is_dir() else []:
            checked += 1
            rel = f"{DEB_CACHE_DIR}/{path.name}"
            body = self._body(path)
            why = None
            if body is None or body.get("deb") != path.name.removesuffix(".json"):
                why = "its checksum or format does not hold"
            else:
                try:
                    data = Digest("sha256", body["data"])
                except (KeyError, TypeError, ValueError):
                    data = None
                if data is None or not self.cas.has(data):
                    why = "names a data blob that is not in the store"
            if why is not None:
                path.unlink(missing_ok=True)
                dropped.append((rel, why))
        return checked, dropped


class _HashingFile:
    """A file being written, with the sha256 and size of what went in."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self._f.write(data)
