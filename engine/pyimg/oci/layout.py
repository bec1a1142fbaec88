"""OCI image layout directories: read (`index.json`, blobs by digest) and write (hard links).

The one reader and the one writer of layouts: actions write their outputs with `LayoutWriter`,
the registry client pulls into one (`durable`), external repositories materialize one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pyimg.core.cas import atomic_write_bytes
from pyimg.core.digest import Digest, canonical_json, digest_bytes
from pyimg.errors import UserInputError
from pyimg.oci import media_types as mt
from pyimg.oci.model import Descriptor, Index, Manifest, load_json, parse_index, parse_manifest

if TYPE_CHECKING:
    from pyimg.core.builtin import BlobSource

__all__ = [
    "IMAGE_LAYOUT_VERSION",
    "REF_NAME",
    "Layout",
    "LayoutWriter",
    "link_or_copy",
    "walk",
    "walk_all",
]

IMAGE_LAYOUT_VERSION = "1.0.0"
REF_NAME = "org.opencontainers.image.ref.name"


def link_or_copy(src: Path, dst: Path, link: bool = True) -> None:
    """Make `dst` hold `src`'s bytes: a hard link where the filesystem allows (and `link`),
    else a copy.

    The copy goes through a temp file and a rename, so `dst` never holds partial bytes.
    """
    if link:
        try:
            os.link(src, dst)
            return
        except FileExistsError:
            raise
        except OSError:
            pass  # EXDEV (another filesystem), EPERM (protected links), ...: copy instead
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
            shutil.copyfileobj(f, out, 1 << 20)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    except BaseException:
        os.unlink(tmp)
        raise


class Layout:
    """An OCI image layout on disk, opened for reading. Blobs are read on demand.

    A layout may be sparse (the OCI image-layout spec lets referenced blobs be "fulfilled by an
    external blob store"): pyimg leaves a pulled base's layers out until their bytes are needed.
    `lazy` is that store: `is_lazy` tells such a blob from a missing one, and `blob_file` fetches
    it. Manifests, indexes and configs are always present.
    """

    def __init__(self, root: Path, what: str | None = None, lazy: BlobSource | None = None) -> None:
        self.root = Path(root)
        self.what = what or str(root)
        self.lazy = lazy
        marker = self.root / "oci-layout"
        if not marker.is_file():
            raise UserInputError(f"{self.what}: not an OCI image layout (no oci-layout file)")
        version = load_json(marker.read_bytes(), f"{self.what}/oci-layout").get(
            "imageLayoutVersion"
        )
        if version != IMAGE_LAYOUT_VERSION:
            raise UserInputError(f"{self.what}: unsupported imageLayoutVersion {version!r}")
        index_path = self.root / "index.json"
        if not index_path.is_file():
            raise UserInputError(f"{self.what}: no index.json")
        self.index: Index = parse_index(index_path.read_bytes(), f"{self.what}/index.json")

    def blob_path(self, digest: Digest) -> Path:
        return self.root / "blobs" / digest.algorithm / digest.hex

    def has_blob(self, digest: Digest) -> bool:
        return self.blob_path(digest).is_file()

    def is_lazy(self, digest: Digest) -> bool:
        """Absent here, but pinned elsewhere and fetchable: a layer of a sparse layout."""
        return self.lazy is not None and not self.has_blob(digest) and self.lazy.knows(digest)

    def blob_file(self, digest: Digest) -> Path:
        """A file holding the blob: the layout's own, else a lazy blob fetched now. For a blob
        that is simply missing, the layout's path (opening it raises FileNotFoundError)."""
        if self.is_lazy(digest):
            assert self.lazy is not None
            return self.lazy.fetch(digest)
        return self.blob_path(digest)

    def read_blob(self, desc: Descriptor) -> bytes:
        """The bytes of a small blob (manifest, index, config), checked against `desc`.

        A missing blob, or one whose size or digest differs, is a UserInputError naming it (a
        layout we read is user input; `validate` raises IntegrityError for layouts we wrote).
        """
        path = self.blob_path(desc.digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise UserInputError(f"{self.what}: blob {desc.digest} is missing") from None
        actual = digest_bytes(data)
        if actual != desc.digest or len(data) != desc.size:
            raise UserInputError(
                f"{self.what}: blob {desc.digest} is corrupt: expected {desc.digest} "
                f"({desc.size} bytes), found {actual} ({len(data)} bytes)"
            )
        return data

    def resolve(self, ref: str | None = "latest") -> Descriptor:
        """The index.json entry named `ref`; if none has that name, the only entry there is."""
        entries = self.index.manifests
        if ref is not None:
            named = [d for d in entries if dict(d.annotations).get(REF_NAME) == ref]
            if len(named) == 1:
                return named[0]
            if len(named) > 1:
                raise UserInputError(f"{self.what}: several index.json entries are named {ref!r}")
        if len(entries) == 1:
            return entries[0]
        names = sorted(dict(d.annotations).get(REF_NAME, str(d.digest)) for d in entries)
        raise UserInputError(
            f"{self.what}: index.json has {len(entries)} entries and none is named {ref!r}: {names}"
        )

    def find(self, digest: Digest) -> Descriptor | None:
        """The index.json entry with this digest, if any."""
        for d in self.index.manifests:
            if d.digest == digest:
                return d
        return None

    def manifest(self, desc: Descriptor) -> Manifest:
        return parse_manifest(self.read_blob(desc), f"{self.what}: manifest {desc.digest}")

    def image_index(self, desc: Descriptor) -> Index:
        return parse_index(self.read_blob(desc), f"{self.what}: index {desc.digest}")


def walk(layout: Layout, root: Descriptor) -> Iterator[Descriptor]:
    """Every descriptor reachable from `root` (itself first), depth first, each digest once.

    Reads manifests and indexes (verified); does not read configs or layers. Entries of an
    index whose media type is neither a manifest nor an index (e.g. attestations) are yielded
    but not followed.
    """
    seen: set[Digest] = set()

    def visit(desc: Descriptor) -> Iterator[Descriptor]:
        if desc.digest in seen:
            return
        seen.add(desc.digest)
        yield desc
        if desc.media_type in mt.INDEXES:
            for child in layout.image_index(desc).manifests:
                yield from visit(child)
        elif desc.media_type in mt.MANIFESTS:
            m = layout.manifest(desc)
            yield from visit(m.config)
            for layer in m.layers:
                yield from visit(layer)

    yield from visit(root)


def walk_all(layout: Layout) -> Iterator[Descriptor]:
    """`walk` from every index.json entry: each descriptor the layout references, once."""
    seen: set[Digest] = set()
    for entry in layout.index.manifests:
        for d in walk(layout, entry):
            if d.digest not in seen:
                seen.add(d.digest)
                yield d


class LayoutWriter:
    """Builds an OCI image layout in `root` (created if absent).

    Blobs are added by hard link (or copy) from files, or from bytes; `finish` writes
    `index.json` (canonical JSON) and `oci-layout` last, so that a directory is a layout only
    once every blob it names is there. An action's outputs need nothing more (a failed action's
    outputs are discarded). A `durable` writer, for a directory that outlives a failure (a
    pull), writes each file through a temp file, fsync and rename: an interrupted write leaves
    no partial blob that a later pull would take as present.
    """

    def __init__(self, root: Path, *, durable: bool = False) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self._durable = durable

    def blob_path(self, digest: Digest) -> Path:
        return self.blobs / digest.hex

    def has_blob(self, digest: Digest, size: int) -> bool:
        """Whether the blob is there already with `size` bytes (a resumed pull skips it)."""
        try:
            return self.blob_path(digest).stat().st_size == size
        except FileNotFoundError:
            return False

    def _write(self, path: Path, data: bytes) -> None:
        if self._durable:
            atomic_write_bytes(path, data)
        else:
            path.write_bytes(data)

    def add_file(self, digest: Digest, src: Path, link: bool = True) -> Path:
        """Add the blob `digest` from `src` (trusted to hold those bytes; the validator checks),
        hard-linked unless `link` is False (a user's file, which pyimg must not touch)."""
        dst = self.blob_path(digest)
        if not dst.exists():
            link_or_copy(Path(src), dst, link)
        return dst

    def add_bytes(self, data: bytes) -> Digest:
        digest = digest_bytes(data)
        dst = self.blob_path(digest)
        if not dst.exists():
            self._write(dst, data)
        return digest

    def finish(self, manifests: Sequence[Descriptor]) -> None:
        """Write index.json listing `manifests` in the given order, then oci-layout."""
        self._write(self.root / "index.json", Index(tuple(manifests)).to_bytes())
        self._write(
            self.root / "oci-layout", canonical_json({"imageLayoutVersion": IMAGE_LAYOUT_VERSION})
        )
