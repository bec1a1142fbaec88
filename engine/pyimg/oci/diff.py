"""A built-in differ of OCI images: explains two images or indexes down to the first differing item.

`diff_descriptors` compares two roots (each in its own layout) and returns one `Difference` per
independent cause: an index entry, a manifest or config JSON field, or for each differing layer the
first differing tar entry (a header field, a byte range of its content, an entry present on one
side only). Consequences of a deeper difference (a layer's digest in the manifest, its `diff_id` in
the config) are not reported separately: the deeper cause explains them. Layers are streamed,
never held in memory.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pyimg.core.streams import ByteReader
from pyimg.errors import UserInputError
from pyimg.oci import media_types as mt
from pyimg.oci.compress import DECOMPRESSION_ERRORS, open_decompressed, read_exact
from pyimg.oci.layout import REF_NAME, Layout
from pyimg.oci.model import Descriptor, load_json

__all__ = [
    "DIFFERENCE_KINDS",
    "TAR_FIELDS",
    "Difference",
    "content_span",
    "diff_descriptors",
    "diff_json",
    "diff_layer_files",
    "diff_tar_streams",
    "json_path",
]

# What a Difference can be (the `kind` field; docs/audit.md documents each).
DIFFERENCE_KINDS = (
    "media-type",  # the two roots (or two entries at one place) have different media types
    "index-entry",  # an index entry (by platform or name) present on one side only
    "index-field",  # a field of an index's JSON
    "manifest-field",  # a field of a manifest's JSON (annotations, number of layers, ...)
    "config-field",  # a field of an image config
    "json-bytes",  # the same JSON value serialized to other bytes
    "entry-missing",  # a tar entry present in one layer only
    "tar-header",  # a header field of a tar entry
    "content",  # a byte range of a tar entry's content
    "tar-bytes",  # the tars differ outside headers and contents (padding, end blocks)
    "compression",  # the same tar compressed to other bytes
    "blob",  # a blob pyimg cannot look inside differs
    "digest",  # only the two digests are known (one side's content is not at hand)
)

# Tar header fields in the order they are compared; `pax[KEY]` follows for PAX records.
TAR_FIELDS = (
    "type",
    "mode",
    "uid",
    "gid",
    "uname",
    "gname",
    "size",
    "mtime",
    "linkname",
    "devmajor",
    "devminor",
)

_TYPE_NAMES = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
    tarfile.CHRTYPE: "char device",
    tarfile.BLKTYPE: "block device",
    tarfile.FIFOTYPE: "fifo",
}
_CHUNK = 1 << 20
# What reading a layer's tar stream can raise when its bytes are corrupt.
_LAYER_READ_ERRORS: tuple[type[BaseException], ...] = (tarfile.TarError, *DECOMPRESSION_ERRORS)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Difference:
    """One differing item. `where` leads to it from the root, outermost first (e.g.
    `("manifests[1] linux/arm64/v8", "layers[0]")`). `a` and `b` are the two sides' values (for
    `entry-missing`, the side holding the entry is the one whose value is not None). For
    `content`, `offset` is the first differing byte and `length` spans to the last differing byte
    (within the shorter content)."""

    kind: str
    where: tuple[str, ...] = ()
    field: str = ""
    a: Any = None
    b: Any = None
    platform: str | None = None
    layer: int | None = None
    layer_digests: tuple[str, str] | None = None
    entry: str | None = None
    offset: int | None = None
    length: int | None = None

    def describe(self, a_name: str = "a", b_name: str = "b") -> str:
        """One line for people, naming the sides `a_name` and `b_name`."""
        place = " > ".join(self.where)
        prefix = f"{place}: " if place else ""
        k = self.kind
        if k == "content":
            end = (self.offset or 0) + (self.length or 0) - 1
            return (
                f"{prefix}content differs at bytes {self.offset}..{end} "
                f"({self.length} bytes, first differing offset {self.offset}; "
                f"{a_name} {self.a} bytes, {b_name} {self.b} bytes)"
            )
        if k == "tar-header":
            return (
                f"{prefix}tar header field {self.field}: "
                f"{a_name} {_show(self.field, self.a)}, {b_name} {_show(self.field, self.b)}"
            )
        if k == "entry-missing":
            holder = a_name if self.a is not None else b_name
            other = b_name if self.a is not None else a_name
            return f"{prefix}entry {self.entry} is only in {holder} (missing in {other})"
        if k == "index-entry":
            holder = a_name if self.a is not None else b_name
            return f"{prefix}index entry {self.field} is only in {holder}"
        if k in ("config-field", "manifest-field", "index-field", "media-type"):
            what = {
                "config-field": "config",
                "manifest-field": "manifest",
                "index-field": "index",
                "media-type": "media type",
            }[k]
            field = f" field {self.field}" if self.field else ""
            return f"{prefix}{what}{field}: {a_name} {_js(self.a)}, {b_name} {_js(self.b)}"
        if k == "json-bytes":
            return f"{prefix}the same JSON serialized to other bytes ({self.field})"
        if k == "compression":
            return (
                f"{prefix}the uncompressed tars are identical; only the compressed bytes differ "
                f"({a_name} {self.a}, {b_name} {self.b})"
            )
        if k == "tar-bytes":
            return (
                f"{prefix}the tars differ outside entry headers and contents, first at "
                f"uncompressed offset {self.offset}"
            )
        if k == "digest":
            return (
                f"{prefix}digests differ ({a_name} {self.a}, {b_name} {self.b}); the {a_name} "
                f"content is not at hand: compare with an OCI layout or a registry reference to "
                f"see why"
            )
        return f"{prefix}blob bytes differ ({a_name} {self.a}, {b_name} {self.b})"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "where": list(self.where)}
        for name in ("field", "platform", "layer", "entry", "offset", "length"):
            value = getattr(self, name)
            if value not in (None, ""):
                out[name] = value
        out["a"] = _jsonable(self.a)
        out["b"] = _jsonable(self.b)
        if self.layer_digests is not None:
            out["layer_digests"] = list(self.layer_digests)
        return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return value


def _js(value: Any) -> str:
    return "(absent)" if value is _ABSENT_TEXT else json.dumps(value, sort_keys=True)


def _show(field: str, value: Any) -> str:
    if field == "mode" and isinstance(value, int):
        return f"{value:04o}"
    if value is None:
        return "(absent)"
    return json.dumps(_jsonable(value))


# Stands for "no such key/element" in JSON differences (None is JSON null).
_ABSENT_TEXT = "<absent>"


def json_path(parts: tuple[str | int, ...], root: str = "") -> str:
    """`config.Env[2]`, `config.Labels["org.opencontainers.image.title"]` from path parts."""
    out = root
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif _IDENT.match(p):
            out += f".{p}" if out else p
        else:
            out += f"[{json.dumps(p)}]"
    return out


def diff_json(
    a: Any, b: Any, path: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], Any, Any]]:
    """Every differing leaf of two JSON values, in document order (keys sorted): (path, a, b).

    A key or list element missing on one side is reported with the value `"<absent>"` there.
    """
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            yield from diff_json(a.get(key, _ABSENT_TEXT), b.get(key, _ABSENT_TEXT), (*path, key))
    elif isinstance(a, list) and isinstance(b, list):
        for i in range(max(len(a), len(b))):
            yield from diff_json(
                a[i] if i < len(a) else _ABSENT_TEXT,
                b[i] if i < len(b) else _ABSENT_TEXT,
                (*path, i),
            )
    elif a != b or type(a) is not type(b):
        yield path, a, b


def diff_descriptors(
    a: Layout, a_desc: Descriptor, b: Layout, b_desc: Descriptor
) -> list[Difference]:
    """The differences between two roots (image manifests or indexes), each down to its first
    differing item; empty when the digests are equal."""
    return list(_Differ(a, b).node(a_desc, b_desc, ()))


def diff_layer_files(a: Path, b: Path, where: tuple[str, ...] = ()) -> Difference | None:
    """The first difference between two layer blobs (plain, gzip or zstd tars), or None when
    their bytes are equal."""
    with open(a, "rb") as fa, open(b, "rb") as fb:
        if _same_stream(fa, fb):
            return None
        fa.seek(0)
        fb.seek(0)
        try:
            ra, _ = open_decompressed(fa)
            rb, _ = open_decompressed(fb)
            ha, hb = _Hashing(ra), _Hashing(rb)
            found = diff_tar_streams(ha, hb, where)
            if found is not None:
                return found
            ha.drain()
            hb.drain()
        except _LAYER_READ_ERRORS as e:
            raise UserInputError(
                f"{' > '.join(where) or 'layer'}: cannot read the layer: {e}"
            ) from None
        if ha.digest() == hb.digest():
            return Difference("compression", where)
    with open(a, "rb") as fa, open(b, "rb") as fb:
        ra, _ = open_decompressed(fa)
        rb, _ = open_decompressed(fb)
        return Difference("tar-bytes", where, offset=_first_offset(ra, rb))


def diff_tar_streams(a: ByteReader, b: ByteReader, where: tuple[str, ...] = ()) -> Difference | None:
    """The first differing entry of two uncompressed tar streams read in order, or None.

    Entries are compared by position; when the names at one position differ, the bytewise
    smaller one is reported as present on its side only (canonical tars are sorted that way).
    """
    ta, tb = _tar_stream(a), _tar_stream(b)
    while True:
        ma, mb = ta.next(), tb.next()
        if ma is None and mb is None:
            return None
        if ma is None or mb is None or ma.name != mb.name:
            return _missing(ma, mb, where)
        at = (*where, f"entry {ma.name}")
        for name in TAR_FIELDS:
            va, vb = _field(ma, name), _field(mb, name)
            if va != vb:
                return Difference("tar-header", at, name, va, vb, entry=ma.name)
        pax_a, pax_b = ma.pax_headers, mb.pax_headers
        for key in sorted(set(pax_a) | set(pax_b)):
            if pax_a.get(key) != pax_b.get(key):
                return Difference(
                    "tar-header", at, f"pax[{key}]", pax_a.get(key), pax_b.get(key), entry=ma.name
                )
        if ma.isreg() and ma.size:
            fa, fb = ta.extractfile(ma), tb.extractfile(mb)
            assert fa is not None and fb is not None
            span = content_span(fa, fb)
            if span is not None:
                return Difference(
                    "content",
                    at,
                    "",
                    ma.size,
                    mb.size,
                    entry=ma.name,
                    offset=span[0],
                    length=span[1],
                )


def _missing(
    ma: tarfile.TarInfo | None, mb: tarfile.TarInfo | None, where: tuple[str, ...]
) -> Difference:
    if mb is None or (ma is not None and _bytes(ma.name) < _bytes(mb.name)):
        assert ma is not None
        return Difference(
            "entry-missing", (*where, f"entry {ma.name}"), "", ma.name, None, entry=ma.name
        )
    return Difference(
        "entry-missing", (*where, f"entry {mb.name}"), "", None, mb.name, entry=mb.name
    )


def _bytes(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def _field(m: tarfile.TarInfo, name: str) -> Any:
    if name == "type":
        return _TYPE_NAMES.get(m.type, m.type.decode("latin-1"))
    if name == "mtime":
        return int(m.mtime) if float(m.mtime).is_integer() else m.mtime
    if name in ("devmajor", "devminor") and not (m.ischr() or m.isblk()):
        return None
    return getattr(m, name)


def _tar_stream(stream: ByteReader) -> tarfile.TarFile:
    """A tarfile reading `stream` in order: mode 'r|' neither seeks nor closes it."""
    # typeshed asks for a seekable, writable file object in every mode; 'r|' only reads.
    tar: tarfile.TarFile = tarfile.open(fileobj=stream, mode="r|")  # type: ignore[call-overload]
    return tar


def content_span(fa: ByteReader, fb: ByteReader) -> tuple[int, int] | None:
    """(first differing offset, length up to the last differing byte) within the shorter content,
    or None when the common prefix is equal (then the sizes, compared before, are too)."""
    first = last = -1
    pos = 0
    while True:
        ca, cb = read_exact(fa, _CHUNK), read_exact(fb, _CHUNK)
        n = min(len(ca), len(cb))
        if ca[:n] != cb[:n]:
            for i in range(n):
                if ca[i] != cb[i]:
                    if first < 0:
                        first = pos + i
                    last = pos + i
        pos += n
        if n == 0 or len(ca) != len(cb):
            break
    return None if first < 0 else (first, last - first + 1)


def _same_stream(a: ByteReader, b: ByteReader) -> bool:
    while True:
        ca, cb = read_exact(a, _CHUNK), read_exact(b, _CHUNK)
        if ca != cb:
            return False
        if not ca:
            return True


def _first_offset(a: ByteReader, b: ByteReader) -> int:
    pos = 0
    while True:
        ca, cb = read_exact(a, _CHUNK), read_exact(b, _CHUNK)
        if ca != cb:
            n = min(len(ca), len(cb))
            return pos + next((i for i in range(n) if ca[i] != cb[i]), n)
        if not ca:
            return pos
        pos += len(ca)


class _Hashing:
    """A reader that hashes what passes through (tarfile reads the stream; we want its digest)."""

    def __init__(self, inner: ByteReader) -> None:
        self._inner = inner
        self._h = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._inner.read(n)
        self._h.update(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass

    def digest(self) -> str:
        return self._h.hexdigest()


class _Differ:
    def __init__(self, a: Layout, b: Layout) -> None:
        self.a = a
        self.b = b

    def node(
        self, da: Descriptor, db: Descriptor, where: tuple[str, ...], platform: str | None = None
    ) -> Iterator[Difference]:
        if da.digest == db.digest:
            return
        if da.media_type != db.media_type:
            yield Difference(
                "media-type", where, "mediaType", da.media_type, db.media_type, platform
            )
        elif da.media_type in mt.INDEXES:
            yield from self.index(da, db, where)
        elif da.media_type in mt.MANIFESTS:
            yield from self.manifest(da, db, where, platform)
        else:
            yield Difference("blob", where, "", str(da.digest), str(db.digest), platform)

    def _json(self, layout: Layout, desc: Descriptor) -> tuple[bytes, dict[str, Any]]:
        raw = layout.read_blob(desc)
        return raw, load_json(raw, f"{layout.what}: {desc.digest}")

    def index(self, da: Descriptor, db: Descriptor, where: tuple[str, ...]) -> Iterator[Difference]:
        raw_a, ja = self._json(self.a, da)
        raw_b, jb = self._json(self.b, db)
        ia, ib = self.a.image_index(da), self.b.image_index(db)
        ka, kb = _entry_keys(ia.manifests), _entry_keys(ib.manifests)
        # Entry digests and sizes are consequences of what differs below them.
        skip = {
            ("manifests", i, f)
            for i in range(max(len(ia.manifests), len(ib.manifests)))
            for f in ("digest", "size")
        }
        found = False
        if ka == kb:
            for path, va, vb in diff_json(ja, jb):
                if path[:3] not in skip:
                    found = True
                    yield Difference("index-field", where, json_path(path), va, vb)
                    break
        for key in ka:
            if key not in kb:
                found = True
                yield Difference("index-entry", where, key, key, None)
        for key in kb:
            if key not in ka:
                found = True
                yield Difference("index-entry", where, key, None, key)
        for i, key in enumerate(ka):
            if key in kb:
                ea, eb = ia.manifests[i], ib.manifests[kb.index(key)]
                plat = str(ea.platform) if ea.platform is not None else None
                for d in self.node(ea, eb, (*where, f"manifests[{i}] {key}"), plat):
                    found = True
                    yield d
        if not found and raw_a != raw_b:
            yield Difference("json-bytes", where, "index")

    def manifest(
        self, da: Descriptor, db: Descriptor, where: tuple[str, ...], platform: str | None
    ) -> Iterator[Difference]:
        raw_a, ja = self._json(self.a, da)
        raw_b, jb = self._json(self.b, db)
        ma, mb = self.a.manifest(da), self.b.manifest(db)
        found = False
        if len(ma.layers) != len(mb.layers):
            found = True
            yield Difference(
                "manifest-field", where, "layers (count)", len(ma.layers), len(mb.layers), platform
            )
        else:
            skip: set[tuple[str | int, ...]] = {("config", "digest"), ("config", "size")}
            skip |= {("layers", i, f) for i in range(len(ma.layers)) for f in ("digest", "size")}
            for path, va, vb in diff_json(ja, jb):
                if path[:3] not in skip and path[:2] not in skip:
                    found = True
                    yield Difference("manifest-field", where, json_path(path), va, vb, platform)
                    break
        # Layers only one side has: their diff_ids follow from the count reported above.
        differing_layers = set(
            range(min(len(ma.layers), len(mb.layers)), len(mb.layers) + len(ma.layers))
        )
        for i, (la, lb) in enumerate(zip(ma.layers, mb.layers, strict=False)):
            if la.digest == lb.digest:
                continue
            differing_layers.add(i)
            at = (*where, f"layers[{i}]")
            digests = (str(la.digest), str(lb.digest))
            if la.media_type != lb.media_type:
                d: Difference | None = Difference(
                    "media-type", at, "mediaType", la.media_type, lb.media_type
                )
            elif la.media_type not in mt.LAYERS:
                d = Difference("blob", at, "", str(la.digest), str(lb.digest))
            else:
                d = diff_layer_files(self.a.blob_path(la.digest), self.b.blob_path(lb.digest), at)
            if d is not None:
                found = True
                yield _with(d, platform=platform, layer=i, layer_digests=digests)
        if ma.config.digest != mb.config.digest:
            d = self.config(ma.config, mb.config, (*where, "config"), differing_layers)
            if d is not None:
                found = True
                yield _with(d, platform=platform)
        if not found and raw_a != raw_b:
            yield Difference("json-bytes", where, "manifest", platform=platform)

    def config(
        self, da: Descriptor, db: Descriptor, where: tuple[str, ...], layers: set[int]
    ) -> Difference | None:
        raw_a, ja = self._json(self.a, da)
        raw_b, jb = self._json(self.b, db)
        for path, va, vb in diff_json(ja, jb):
            # A differing layer's diff_id is a consequence of that layer, reported there.
            if path[:2] == ("rootfs", "diff_ids") and len(path) == 3 and path[2] in layers:
                continue
            return Difference("config-field", where, json_path(path), va, vb)
        if layers:
            return None
        return Difference("json-bytes", where, "config") if raw_a != raw_b else None


def _with(d: Difference, **changes: Any) -> Difference:
    return replace(d, **{k: v for k, v in changes.items() if getattr(d, k) is None})


def _entry_keys(entries: tuple[Descriptor, ...]) -> list[str]:
    """How index entries are matched across two indexes: by platform when platforms are unique,
    else by ref name, else by position."""
    plats = [str(e.platform) if e.platform is not None else "" for e in entries]
    if all(plats) and len(set(plats)) == len(plats):
        return plats
    names = [dict(e.annotations).get(REF_NAME, "") for e in entries]
    if all(names) and len(set(names)) == len(names):
        return names
    return [f"#{i}" for i in range(len(entries))]
