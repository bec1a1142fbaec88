"""Pushing: blobs (skipped, mounted or uploaded), manifests, and whole OCI layouts.

A blob the repository has is skipped (HEAD first); one another repository of the registry holds
is mounted (mount.py); the rest is uploaded, monolithic (POST, then one PUT with the body) or
chunked (PATCH chunks with Content-Range, then PUT). A manifest goes up only after everything it
references, so a manifest the registry has means its blobs are there too.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal
from urllib.parse import urlencode, urlsplit, urlunsplit

from pyimg.core.digest import Digest, digest_bytes
from pyimg.errors import IntegrityError, RegistryError, UsageError
from pyimg.oci.layout import Layout
from pyimg.oci.media_types import INDEXES, MANIFESTS
from pyimg.oci.model import Descriptor, parse_index, parse_manifest

from .connection import Connection
from .mount import BlobOrigin, blob_origin, mount_blob
from .pull import MANIFEST_ACCEPT, fetch_blob
from .reference import Reference
from .transport import Body, ConnectionFailed, RetryableStatus

__all__ = ["DEFAULT_CHUNK", "PARALLEL_UPLOADS", "BlobOutcome", "PushCounters", "Pusher", "TagMoved"]

PARALLEL_UPLOADS = 4  # blobs of one manifest uploaded at once
DEFAULT_CHUNK = 8 << 20

BlobOutcome = Literal["skipped", "mounted", "uploaded"]


class TagMoved(Exception):
    """A conditional PUT of a tag found it moved by another writer (412): read it again."""


@dataclass(slots=True)
class PushCounters:
    """What a push did, per blob: uploaded, mounted from another repository, or already there."""

    uploaded: int = 0
    mounted: int = 0
    skipped: int = 0
    bytes_uploaded: int = 0
    manifests_put: int = 0
    manifests_skipped: int = 0


# A manifest refused because a blob it names is unknown, right after that blob was pushed, is
# sent again after these pauses: docker-registry rewrites a blob's link in the repository in
# place (truncate, write) each time an upload or mount of it ends, and a manifest verified at
# that moment reads an empty link (answered as DIGEST_INVALID and MANIFEST_BLOB_UNKNOWN).
# Signatures and attestations of one push upload the same blobs (the payload, the empty
# config) side by side; registries on eventually consistent storage answer the same way.
_BLOB_SETTLE_PAUSES = (0.2, 0.5, 1.0)


class Pusher:
    """Pushes through a Connection and counts what it did (`counters`).

    `upload` is "monolithic" or "chunked" (PATCH chunks of `chunk_size`).
    """

    def __init__(
        self, conn: Connection, upload: str = "monolithic", chunk_size: int = DEFAULT_CHUNK
    ) -> None:
        if upload not in ("monolithic", "chunked"):
            raise UsageError(f"upload mode must be 'monolithic' or 'chunked', not {upload!r}")
        self._conn = conn
        self.upload = upload
        self.chunk_size = chunk_size
        self.counters = PushCounters()
        self._counters_lock = threading.Lock()  # blobs of one manifest are pushed in parallel

    def _count(self, name: str, n: int) -> None:
        with self._counters_lock:
            setattr(self.counters, name, getattr(self.counters, name) + n)

    # -- manifests --------------------------------------------------------------------------

    def has_manifest(self, ref: Reference, digest: Digest) -> bool:
        url = self._conn.url(ref, f"/v2/{ref.repository}/manifests/{digest}")
        resp = self._conn.send(ref, "HEAD", url, push=True, headers=(("Accept", MANIFEST_ACCEPT),))
        resp.close()
        if resp.status in (200, 404):
            return resp.status == 200
        raise self._conn.fail(ref, "HEAD", url, resp)

    def put_manifest(self, ref: Reference, data: bytes, media_type: str, identifier: str) -> Digest:
        """PUT manifest bytes under a tag or their digest; returns their digest."""
        return self.put_manifest_answer(ref, data, media_type, identifier)[0]

    def put_manifest_answer(
        self, ref: Reference, data: bytes, media_type: str, identifier: str,
        replacing: Digest | None | Literal["any"] = "any",
    ) -> tuple[Digest, str | None]:
        """`put_manifest`, plus the OCI-Subject header of the answer: a registry with the
        referrers API sends it for a manifest with a `subject` (distribution-spec, "Pushing
        Manifests with Subject"); without it, the client maintains the referrers tag.

        `replacing` makes the PUT of a tag conditional (RFC 9110 If-Match / If-None-Match: *):
        only if the tag still holds that manifest (None: no manifest yet). A registry that
        honours the condition answers 412 when another writer moved the tag: TagMoved. One that
        ignores it (docker-registry) just stores the manifest."""
        digest = digest_bytes(data)
        url = self._conn.url(ref, f"/v2/{ref.repository}/manifests/{identifier}")
        headers: tuple[tuple[str, str], ...] = (
            ("Content-Type", media_type), ("Content-Length", str(len(data))))
        if replacing is None:
            headers += (("If-None-Match", "*"),)
        elif replacing != "any":
            headers += (("If-Match", f'"{replacing}"'),)
        for pause in (*_BLOB_SETTLE_PAUSES, None):
            resp = self._conn.send(
                ref, "PUT", url, push=True, headers=headers, body=data, follow_redirects=False
            )
            if resp.status == 412 and replacing != "any":
                resp.close()
                raise TagMoved(f"{ref.registry}/{ref.repository}:{identifier}")
            if resp.status in (200, 201):
                break
            error = self._conn.fail(ref, "PUT", url, resp)
            if "MANIFEST_BLOB_UNKNOWN" not in error.codes or pause is None:
                raise error
            self._conn.pause(pause)
        served = resp.headers.get("Docker-Content-Digest")
        subject = resp.headers.get("OCI-Subject")
        resp.close()
        if served and served != str(digest):
            raise IntegrityError(
                f"registry {ref.registry} stored manifest {ref.repository}:{identifier} as "
                f"{served}, expected {digest}"
            )
        self._count("manifests_put", 1)
        return digest, subject

    # -- blobs ------------------------------------------------------------------------------

    def head_blob(self, ref: Reference, digest: Digest, *, push: bool = False) -> int | None:
        """The blob's size if the repository has it, else None."""
        url = self._conn.url(ref, f"/v2/{ref.repository}/blobs/{digest}")
        resp = self._conn.send(ref, "HEAD", url, push=push)
        resp.close()
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise self._conn.fail(ref, "HEAD", url, resp)
        try:
            return int(resp.headers.get("Content-Length", "-1"))
        except ValueError:
            return -1

    def push_blob(
        self,
        ref: Reference,
        digest: Digest,
        size: int,
        open_blob: Callable[[], BinaryIO] | None,
        mount_from: str | None = None,
        *,
        check_first: bool = True,
    ) -> BlobOutcome:
        """Make `ref`'s repository hold the blob; returns "skipped", "mounted" or "uploaded".

        HEAD first (skip if present); then a cross-repository mount when `mount_from` names a
        repository of the same registry that has it; else an upload. `open_blob` may be None for
        a blob only mountable (lazily pulled); the registry refusing the mount is then an error.
        `check_first=False` skips the HEAD for a small blob that is almost surely new (a fresh
        signature): uploading it again costs less than asking first.
        """
        if check_first and self.head_blob(ref, digest, push=True) is not None:
            self._count("skipped", 1)
            return "skipped"
        conn = self._conn
        base = conn.url(ref, f"/v2/{ref.repository}/blobs/uploads/")

        def attempt() -> BlobOutcome:
            location: str | None = None
            if mount_from and mount_from != ref.repository:
                location = mount_blob(conn, ref, digest, mount_from)
                if location is None:
                    return "mounted"
            if open_blob is None:
                raise RegistryError(
                    f"registry {ref.registry}: blob {digest} is not available locally and "
                    f"could not be mounted from {mount_from or '(no source repository)'}"
                )
            if location is None:
                resp = conn.send(ref, "POST", base, push=True, follow_redirects=False, retry=False)
                if resp.status != 202:
                    raise conn.fail(ref, "POST", base, resp)
                location = conn.location(ref, base, resp)
            body: Body
            if self.upload == "chunked":
                location = self._upload_chunks(ref, location, open_blob)
                body, length = b"", 0
            else:
                body, length = open_blob, size
            url = _add_query(location, {"digest": str(digest)})
            headers = (
                ("Content-Type", "application/octet-stream"),
                ("Content-Length", str(length)),
            )
            resp = conn.send(
                ref,
                "PUT",
                url,
                push=True,
                headers=headers,
                body=body,
                follow_redirects=False,
                retry=False,
            )
            if resp.status not in (201, 204):
                raise conn.fail(ref, "PUT", url, resp)
            resp.close()
            return "uploaded"

        outcome = conn.retrying(attempt, conn.describe(ref, "upload", base))
        if outcome == "mounted":
            self._count("mounted", 1)
        else:
            self._count("uploaded", 1)
            self._count("bytes_uploaded", size)
        return outcome

    def open_upload(self, ref: Reference, digest: Digest) -> str | None:
        """The first of the two requests of a small upload (`finish_upload` is the second), for
        callers that overlap them with other requests: a POST that asks to mount `digest` from
        `ref`'s own repository. A repository that holds the blob answers 201 (None: nothing to
        upload), so this one request is the HEAD and the POST; any other answer opens an upload
        session (202, what the distribution spec asks of a registry that cannot mount), whose
        URL is returned. After a retryable failure, or a registry that refuses the mount
        parameters outright, "" (no session: `finish_upload` starts over with `push_blob`)."""
        try:
            location = mount_blob(self._conn, ref, digest, ref.repository)
        except (RetryableStatus, ConnectionFailed, RegistryError):
            return ""
        if location is None:
            self._count("skipped", 1)
        return location

    def finish_upload(self, ref: Reference, location: str | None, digest: Digest,
                      data: bytes) -> BlobOutcome:
        """PUT `data` into the session `open_upload` opened (`location`; None: the blob was
        there). No session, or a PUT that fails with a retryable status, falls back to
        `push_blob`, which starts over under the retry policy."""
        if location is None:
            return "skipped"
        if location:
            url = _add_query(location, {"digest": str(digest)})
            headers = (("Content-Type", "application/octet-stream"),
                       ("Content-Length", str(len(data))))
            try:
                resp = self._conn.send(ref, "PUT", url, push=True, headers=headers, body=data,
                                       follow_redirects=False, retry=False)
            except (RetryableStatus, ConnectionFailed):
                pass
            else:
                if resp.status not in (201, 204):
                    raise self._conn.fail(ref, "PUT", url, resp)
                resp.close()
                self._count("uploaded", 1)
                self._count("bytes_uploaded", len(data))
                return "uploaded"
        return self.push_blob(ref, digest, len(data), lambda: io.BytesIO(data))

    def _upload_chunks(
        self, ref: Reference, location: str, open_blob: Callable[[], BinaryIO]
    ) -> str:
        offset = 0
        with open_blob() as f:
            while chunk := f.read(self.chunk_size):
                headers = (
                    ("Content-Type", "application/octet-stream"),
                    ("Content-Length", str(len(chunk))),
                    # distribution expects `start-end`, inclusive, without a `bytes ` prefix.
                    ("Content-Range", f"{offset}-{offset + len(chunk) - 1}"),
                )
                resp = self._conn.send(
                    ref,
                    "PATCH",
                    location,
                    push=True,
                    headers=headers,
                    body=chunk,
                    follow_redirects=False,
                    retry=False,
                )
                if resp.status != 202:
                    raise self._conn.fail(ref, "PATCH", location, resp)
                location = self._conn.location(ref, location, resp)
                offset += len(chunk)
        return location

    # -- layouts ----------------------------------------------------------------------------

    def push_layout(
        self,
        layout_dir: str | Path,
        ref: Reference,
        tags: Iterable[str] = (),
        *,
        mount_from: str | Reference | None = None,
        fetch_missing: Callable[[Digest], Path] | None = None,
    ) -> Digest:
        """Push the image or index of an OCI layout to `ref` and each of `tags`.

        The layout entry is the one whose ref.name annotation equals the reference's tag, else
        the only one. An index pushes its child manifests (and their blobs) first. `mount_from`
        is a repository of the same registry that may already hold the blobs; when it is a
        Reference to another registry, blobs missing from the layout are fetched from there.
        `fetch_missing(digest)` gives a file for a blob the (sparse) layout lacks, called only
        when the destination has it neither already nor by mount.
        """
        layout = Layout(Path(layout_dir))
        entry = layout.resolve(ref.tag)
        self._push_tree(ref, layout, entry, blob_origin(ref, mount_from), fetch_missing)
        data = layout.read_blob(entry)
        for tag in dict.fromkeys([*([ref.tag] if ref.tag else []), *tags]):
            self.put_manifest(ref.with_tag(tag), data, entry.media_type, tag)
        return entry.digest

    def _push_tree(
        self,
        ref: Reference,
        layout: Layout,
        desc: Descriptor,
        origin: BlobOrigin,
        fetch_missing: Callable[[Digest], Path] | None,
    ) -> None:
        data = layout.read_blob(desc)
        if self.has_manifest(ref, desc.digest):
            # A manifest is only stored after all it references, so its blobs are there too.
            self._count("manifests_skipped", 1)
            return
        where = f"{layout.what}: {desc.digest}"
        if desc.media_type in INDEXES:
            for child in parse_index(data, where).manifests:
                self._push_tree(ref, layout, child, origin, fetch_missing)
        elif desc.media_type in MANIFESTS:
            # Blobs go up in parallel, as skopeo and docker do: one connection rarely fills the
            # link, and each blob is an independent, idempotent upload.
            m = parse_manifest(data, where)
            blobs = [m.config, *m.layers]
            with ThreadPoolExecutor(max_workers=min(PARALLEL_UPLOADS, len(blobs))) as pool:
                futures = [
                    pool.submit(self._push_layout_blob, ref, layout, blob, origin, fetch_missing)
                    for blob in blobs
                ]
                for f in futures:
                    f.result()
        else:
            raise UsageError(f"{where} has unsupported media type {desc.media_type!r}")
        self.put_manifest(ref, data, desc.media_type, str(desc.digest))

    def _push_layout_blob(
        self,
        ref: Reference,
        layout: Layout,
        desc: Descriptor,
        origin: BlobOrigin,
        fetch_missing: Callable[[Digest], Path] | None,
    ) -> None:
        path = layout.blob_path(desc.digest)
        if not layout.has_blob(desc.digest) and origin.source is not None and not origin.repository:
            # The source is on another registry: nothing to mount, so read the blob from there.
            if self.head_blob(ref, desc.digest, push=True) is not None:
                self._count("skipped", 1)
                return
            fetch_blob(self._conn, origin.source, desc.digest, path, desc.size)
        opener: Callable[[], BinaryIO] | None = None
        if layout.has_blob(desc.digest):
            opener = lambda: open(path, "rb")  # noqa: E731, SIM115
        elif fetch_missing is not None:
            opener = lambda: open(fetch_missing(desc.digest), "rb")  # noqa: E731, SIM115
        self.push_blob(ref, desc.digest, desc.size, opener, origin.repository)


def _add_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = parts.query + ("&" if parts.query else "") + urlencode(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
