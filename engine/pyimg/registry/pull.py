"""Pulling: manifests and blobs from a registry, verified, and whole images into an OCI layout.

Every byte that comes from a registry is verified against its digest before anything keeps it:
a manifest by the digest it was asked by (or the registry's Docker-Content-Digest), a blob while
it streams to a temp file that is renamed into place only once it hashes right.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pyimg.core import json_input
from pyimg.core.cas import atomic_file
from pyimg.core.digest import CHUNK, Digest, digest_bytes
from pyimg.errors import IntegrityError, RegistryError, UserInputError
from pyimg.oci.layout import REF_NAME, LayoutWriter
from pyimg.oci.media_types import INDEXES, MANIFESTS
from pyimg.oci.model import Descriptor, Index, Manifest, Platform, parse_index, parse_manifest
from pyimg.oci.platforms import first_platform_match

from .connection import Connection
from .reference import Reference

__all__ = [
    "MANIFEST_ACCEPT",
    "FetchedManifest",
    "PullResult",
    "fetch_blob",
    "find_manifest",
    "get_manifest",
    "pull_to_layout",
    "read_small_blob",
    "resolve_platform",
]

MANIFEST_ACCEPT = ", ".join(sorted(MANIFESTS | INDEXES))
# Manifests are small by spec (registries reject > 4 MiB); a larger answer is not a manifest.
_MANIFEST_LIMIT = 4 << 20

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class FetchedManifest:
    """The exact bytes a registry served, their media type and (verified) digest."""

    data: bytes = field(repr=False)
    media_type: str
    digest: Digest

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEXES

    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, self.size)

    def manifest(self) -> Manifest:
        """The bytes as an image manifest; a registry may serve anything under a manifest type,
        which is then a RegistryError naming the digest."""
        return self._parsed(parse_manifest)

    def index(self) -> Index:
        """The bytes as an image index (see `manifest`)."""
        return self._parsed(parse_index)

    def _parsed(self, parse: Callable[[bytes, str], T]) -> T:
        try:
            return parse(self.data, f"manifest {self.digest}")
        except UserInputError as e:
            raise RegistryError(e.message) from None


@dataclass(frozen=True, slots=True)
class PullResult:
    reference: Reference
    manifest: FetchedManifest  # what index.json points at (an index, or the platform's manifest)
    fetched_blobs: int
    # Layers left out by a lazy pull; fetch them later with the same reference.
    missing: tuple[Descriptor, ...] = ()


def get_manifest(conn: Connection, ref: Reference) -> FetchedManifest:
    """GET the manifest or index `ref` names (tag or digest), verified.

    By digest: the bytes must hash to it. By tag: they must hash to Docker-Content-Digest when
    the registry sends one.
    """
    fetched = find_manifest(conn, ref, missing_ok=False)
    if fetched is None:  # not reached: with missing_ok=False a 404 raises in find_manifest
        raise RegistryError(f"manifest {ref}: not found")
    return fetched


def find_manifest(conn: Connection, ref: Reference, *, missing_ok: bool = True) -> FetchedManifest | None:
    """`get_manifest`, or None when the registry answers 404 (a tag nobody set yet)."""
    url = conn.url(ref, f"/v2/{ref.repository}/manifests/{ref.identifier}")
    resp = conn.send(ref, "GET", url, headers=(("Accept", MANIFEST_ACCEPT),))
    if resp.status == 404 and missing_ok:
        resp.close()
        return None
    if resp.status != 200:
        raise conn.fail(ref, "GET", url, resp)
    media_type = (resp.headers.get("Content-Type") or "").split(";")[0].strip()
    header_digest = resp.headers.get("Docker-Content-Digest")
    data = resp.read(_MANIFEST_LIMIT)
    actual = digest_bytes(data)
    expected = ref.digest
    if expected is None and header_digest:
        try:
            expected = Digest.parse(header_digest)
        except ValueError:
            expected = None
    if expected is not None and actual != expected:
        raise IntegrityError(
            f"manifest {ref}: expected {expected}, registry {ref.registry} served {actual}"
        )
    if media_type not in MANIFESTS | INDEXES:
        # Some registries send application/json; the document's own mediaType then decides.
        try:
            media_type = json_input.loads(data).get("mediaType") or media_type
        except (ValueError, AttributeError):
            pass
    if media_type not in MANIFESTS | INDEXES:
        raise RegistryError(f"manifest {ref}: unsupported media type {media_type!r}")
    return FetchedManifest(data, media_type, actual)


def _platform_entry(ref: Reference, index: FetchedManifest, platform: Platform) -> Descriptor:
    entries = index.index().manifests
    entry = first_platform_match(entries, platform)
    if entry is None:
        available = sorted({str(d.platform) for d in entries if d.platform is not None})
        raise RegistryError(
            f"{ref}: no manifest for platform {platform} (available: {', '.join(available)})"
        )
    return entry


def resolve_platform(
    conn: Connection, ref: Reference, platform: Platform, fetched: FetchedManifest | None = None
) -> FetchedManifest:
    """The image manifest for `platform`: `ref` itself if it is a manifest, else the index entry
    of that os/architecture(/variant), fetched by digest."""
    top = fetched or get_manifest(conn, ref)
    if not top.is_index:
        return top
    return get_manifest(conn, ref.with_digest(_platform_entry(ref, top, platform).digest))


def read_small_blob(conn: Connection, ref: Reference, digest: Digest, limit: int = _MANIFEST_LIMIT) -> bytes:
    """A small blob (a signature payload, an attestation) in memory, verified against `digest`."""
    url = conn.url(ref, f"/v2/{ref.repository}/blobs/{digest}")
    resp = conn.send(ref, "GET", url)
    if resp.status != 200:
        raise conn.fail(ref, "GET", url, resp)
    data = resp.read(limit)
    if digest_bytes(data) != digest:
        raise IntegrityError(
            f"blob {digest} from {ref.registry}/{ref.repository}: the registry served other bytes"
        )
    return data


def fetch_blob(
    conn: Connection, ref: Reference, digest: Digest, dest: str | Path, size: int | None = None
) -> None:
    """Stream a blob to `dest`, hashing as it comes; `dest` appears only once verified.

    A broken connection restarts the download (retry policy). A digest or size mismatch raises
    IntegrityError naming both digests, and leaves no file behind.
    """
    dest = Path(dest)
    url = conn.url(ref, f"/v2/{ref.repository}/blobs/{digest}")

    def attempt() -> None:
        resp = conn.send(ref, "GET", url, retry=False)
        if resp.status != 200:
            raise conn.fail(ref, "GET", url, resp)
        try:
            with atomic_file(dest) as f:
                h = hashlib.sha256()
                n = 0
                for chunk in resp.iter_bytes(CHUNK):
                    n += len(chunk)
                    if size is not None and n > size:
                        break  # more than the descriptor says: no need to read the rest
                    h.update(chunk)
                    f.write(chunk)
                actual = Digest("sha256", h.hexdigest())
                if actual != digest or (size is not None and n != size):
                    got = f"{actual}" if size is None or n <= size else f"more than {size} bytes"
                    raise IntegrityError(
                        f"blob {digest} from {ref.registry}/{ref.repository}: expected {digest}"
                        f"{f' ({size} bytes)' if size is not None else ''}, got {got}"
                        f"{f' ({n} bytes)' if size is None or n <= size else ''}"
                    )
        finally:
            resp.close()

    conn.retrying(attempt, conn.describe(ref, "GET", url))


def pull_to_layout(
    conn: Connection,
    ref: Reference,
    layout_dir: str | Path,
    platform: Platform | None = None,
    lazy: bool = False,
) -> PullResult:
    """Pull an image (or a whole index) into the OCI layout `layout_dir` (created if absent).

    With `platform`, an index resolves to that platform's manifest, which becomes the entry.
    With `lazy`, layers are not fetched (manifests and configs always are); the result lists
    them. index.json lists the pulled entry alone, annotated with the reference's tag if it has
    one, and is written last: a pull that fails leaves no layout that names missing blobs.
    """
    layout = LayoutWriter(Path(layout_dir), durable=True)
    top = get_manifest(conn, ref)
    descriptor = top.descriptor()
    if platform is not None and top.is_index:
        entry = _platform_entry(ref, top, platform)
        top = get_manifest(conn, ref.with_digest(entry.digest))
        descriptor = top.descriptor().with_platform(entry.platform)
    missing: list[Descriptor] = []
    fetched = _pull_tree(conn, ref, layout, top, lazy, missing)
    if ref.tag is not None:
        descriptor = descriptor.with_annotations({REF_NAME: ref.tag})
    layout.finish([descriptor])
    return PullResult(ref.with_digest(top.digest), top, fetched, tuple(missing))


def _pull_tree(
    conn: Connection,
    ref: Reference,
    layout: LayoutWriter,
    manifest: FetchedManifest,
    lazy: bool,
    missing: list[Descriptor],
) -> int:
    fetched = 0
    if manifest.is_index:
        for child in manifest.index().manifests:
            if child.media_type not in MANIFESTS | INDEXES:
                continue
            sub = get_manifest(conn, ref.with_digest(child.digest))
            fetched += _pull_tree(conn, ref, layout, sub, lazy, missing)
    else:
        m = manifest.manifest()
        for i, desc in enumerate((m.config, *m.layers)):
            if layout.has_blob(desc.digest, desc.size):
                continue
            if lazy and i > 0:  # a layer; the config is always fetched
                missing.append(desc)
                continue
            fetch_blob(conn, ref, desc.digest, layout.blob_path(desc.digest), desc.size)
            fetched += 1
    # Manifests after their blobs, index.json last: nothing names a blob not there yet.
    layout.add_bytes(manifest.data)
    return fetched + 1
