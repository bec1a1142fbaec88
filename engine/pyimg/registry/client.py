"""RegistryClient: manifests, blobs, push (skip/mount/upload) and pull to an OCI layout.

Follows the OCI distribution spec (https://github.com/opencontainers/distribution-spec/blob/main/spec.md).
Every byte that comes from a registry is verified against its digest before anything keeps it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

from pyimg.core import json_input
from pyimg.core.digest import CHUNK, Digest, digest_bytes
from pyimg.errors import IntegrityError, RegistryError, UsageError
from pyimg.oci.media_types import INDEXES, MANIFESTS

from ._layout import Layout
from .auth import Authenticator, CredentialStore
from .reference import Reference, parse_reference
from .transport import (
    RETRYABLE_STATUSES,
    Body,
    Request,
    RequestsTransport,
    Response,
    Retrier,
    RetryableStatus,
    RetryPolicy,
    Transport,
    parse_retry_after,
    registry_url,
)

__all__ = [
    "MANIFEST_ACCEPT",
    "FetchedManifest",
    "Platform",
    "PullResult",
    "PushCounters",
    "RegistryClient",
    "pull_to_layout",
    "push_layout",
]

PARALLEL_UPLOADS = 4  # blobs of one manifest uploaded at once

MANIFEST_ACCEPT = ", ".join(sorted(MANIFESTS | INDEXES))
# Manifests are small by spec (registries reject > 4 MiB); a larger answer is not a manifest.
_MANIFEST_LIMIT = 4 << 20
_DEFAULT_CHUNK = 8 << 20


@dataclass(frozen=True, slots=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        """`linux/amd64` or `linux/arm64/v8`; raises UsageError naming the text."""
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise UsageError(f"invalid platform {text!r} (expected os/arch[/variant])")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def matches(self, descriptor_platform: dict[str, Any] | None) -> bool:
        p = descriptor_platform or {}
        if p.get("os") != self.os or p.get("architecture") != self.architecture:
            return False
        return self.variant is None or p.get("variant") == self.variant

    def __str__(self) -> str:
        return "/".join(x for x in (self.os, self.architecture, self.variant) if x)


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

    def json(self) -> dict[str, Any]:
        """The manifest as a JSON object (a registry may serve any bytes under a manifest type)."""
        try:
            doc = json_input.loads(self.data)
        except ValueError as e:
            raise RegistryError(f"manifest {self.digest}: not valid JSON: {e}") from None
        if not isinstance(doc, dict):
            raise RegistryError(f"manifest {self.digest}: not a JSON object")
        return doc

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}


@dataclass(slots=True)
class PushCounters:
    """What a push did, per blob: uploaded, mounted from another repository, or already there."""

    uploaded: int = 0
    mounted: int = 0
    skipped: int = 0
    bytes_uploaded: int = 0
    manifests_put: int = 0
    manifests_skipped: int = 0


@dataclass(frozen=True, slots=True)
class PullResult:
    reference: Reference
    manifest: FetchedManifest  # what index.json points at (an index, or the platform's manifest)
    fetched_blobs: int
    # Layer descriptors left out by a lazy pull; fetch them later with the same reference.
    missing: tuple[dict[str, Any], ...] = ()


class RegistryClient:
    """A client for one or more registries, sharing a transport, credentials and token cache.

    `upload` is "monolithic" (POST, then one PUT with the body) or "chunked" (PATCH chunks of
    `chunk_size` with Content-Range, then PUT). `sleep` and `seed` make retries testable.
    """

    def __init__(
        self,
        transport: Transport | None = None,
        credentials: CredentialStore | None = None,
        *,
        insecure: Iterable[str] = (),
        retry_policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        seed: int | None = 0,
        clock: Callable[[], float] = time.monotonic,
        upload: str = "monolithic",
        chunk_size: int = _DEFAULT_CHUNK,
    ) -> None:
        if upload not in ("monolithic", "chunked"):
            raise UsageError(f"upload mode must be 'monolithic' or 'chunked', not {upload!r}")
        self._transport = transport or RequestsTransport()
        self._retrier = Retrier(retry_policy, sleep=sleep, seed=seed)
        self._auth = Authenticator(
            self._transport, credentials or CredentialStore(), self._retrier, clock
        )
        self._insecure = frozenset(insecure)
        self.upload = upload
        self.chunk_size = chunk_size
        self.counters = PushCounters()
        self._counters_lock = threading.Lock()  # blobs of one manifest are pushed in parallel

    @property
    def retries(self) -> int:
        """How many times a request was retried so far (for tests and progress)."""
        return self._retrier.retries

    @property
    def token_fetches(self) -> int:
        return self._auth.token_fetches

    # -- plumbing ---------------------------------------------------------------------------

    def _url(self, ref: Reference, path: str) -> str:
        return registry_url(ref.endpoint, self._insecure) + path

    @staticmethod
    def _describe(ref: Reference, method: str, url: str) -> str:
        # The path without its query: upload URLs carry opaque state that is nobody's business.
        return f"registry {ref.registry}: {method} {urlsplit(url).path}"

    def _send(
        self,
        ref: Reference,
        method: str,
        url: str,
        *,
        push: bool = False,
        extra_scopes: tuple[str, ...] = (),
        headers: tuple[tuple[str, str], ...] = (),
        body: Body = None,
        follow_redirects: bool = True,
        retry: bool = True,
    ) -> Response:
        """Send with auth (answering one 401) and, when `retry`, the retry policy.

        With `retry=False` a retryable status raises RetryableStatus for the caller's own loop
        (an upload session restarts as a whole rather than replaying one request of it).
        """
        scopes = (f"repository:{ref.repository}:{'pull,push' if push else 'pull'}", *extra_scopes)

        def attempt() -> Response:
            auth = self._auth.header(ref.registry, scopes)
            sent = headers + ((("Authorization", auth),) if auth else ())
            resp = self._transport.send(Request(method, url, sent, body, follow_redirects))
            if resp.status == 401:
                challenge = resp.headers.get("WWW-Authenticate")
                resp.close()
                new = self._auth.on_unauthorized(ref.registry, scopes, challenge)
                if new is not None and new != auth:
                    sent = headers + (("Authorization", new),)
                    resp = self._transport.send(Request(method, url, sent, body, follow_redirects))
            if resp.status in RETRYABLE_STATUSES:
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                resp.close()
                raise RetryableStatus(resp.status, retry_after)
            return resp

        if retry:
            return self._retrier.run(attempt, self._describe(ref, method, url))
        return attempt()

    def _fail(self, ref: Reference, method: str, url: str, resp: Response) -> RegistryError:
        """A RegistryError for an unexpected status, with the registry's error codes if any."""
        detail = ""
        try:
            body = resp.read(64 << 10) if method != "HEAD" else b""
            errors = json_input.loads(body).get("errors") or []
            codes = [f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict)]
            detail = f" ({'; '.join(codes)})" if codes else ""
        except Exception:  # noqa: BLE001 - the status alone is still a good message
            pass
        finally:
            resp.close()
        hint = {401: " unauthorized: check credentials", 403: " denied", 404: " not found"}
        return RegistryError(
            f"{self._describe(ref, method, url)}: HTTP {resp.status}{hint.get(resp.status, '')}{detail}"
        )

    # -- manifests --------------------------------------------------------------------------

    def get_manifest(self, ref: Reference) -> FetchedManifest:
        """GET the manifest or index `ref` names (tag or digest), verified.

        By digest: the bytes must hash to it. By tag: they must hash to Docker-Content-Digest
        when the registry sends one.
        """
        url = self._url(ref, f"/v2/{ref.repository}/manifests/{ref.identifier}")
        resp = self._send(ref, "GET", url, headers=(("Accept", MANIFEST_ACCEPT),))
        if resp.status != 200:
            raise self._fail(ref, "GET", url, resp)
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

    def resolve_platform(
        self, ref: Reference, platform: Platform, fetched: FetchedManifest | None = None
    ) -> FetchedManifest:
        """The image manifest for `platform`: `ref` itself if it is a manifest, else the index
        entry matching os/architecture(/variant), fetched by digest."""
        top = fetched or self.get_manifest(ref)
        if not top.is_index:
            return top
        entries = top.json().get("manifests") or []
        for entry in entries:
            if platform.matches(entry.get("platform")):
                return self.get_manifest(ref.with_digest(Digest.parse(entry["digest"])))
        available = sorted({str(_platform_of(e)) for e in entries if e.get("platform")})
        raise RegistryError(
            f"{ref}: no manifest for platform {platform} (available: {', '.join(available)})"
        )

    def has_manifest(self, ref: Reference, digest: Digest) -> bool:
        url = self._url(ref, f"/v2/{ref.repository}/manifests/{digest}")
        resp = self._send(ref, "HEAD", url, push=True, headers=(("Accept", MANIFEST_ACCEPT),))
        resp.close()
        if resp.status in (200, 404):
            return resp.status == 200
        raise self._fail(ref, "HEAD", url, resp)

    def put_manifest(self, ref: Reference, data: bytes, media_type: str, identifier: str) -> Digest:
        """PUT manifest bytes under a tag or their digest; returns their digest."""
        digest = digest_bytes(data)
        url = self._url(ref, f"/v2/{ref.repository}/manifests/{identifier}")
        headers = (("Content-Type", media_type), ("Content-Length", str(len(data))))
        resp = self._send(
            ref, "PUT", url, push=True, headers=headers, body=data, follow_redirects=False
        )
        if resp.status not in (200, 201):
            raise self._fail(ref, "PUT", url, resp)
        served = resp.headers.get("Docker-Content-Digest")
        resp.close()
        if served and served != str(digest):
            raise IntegrityError(
                f"registry {ref.registry} stored manifest {ref.repository}:{identifier} as "
                f"{served}, expected {digest}"
            )
        self._count("manifests_put", 1)
        return digest

    # -- blobs ------------------------------------------------------------------------------

    def head_blob(self, ref: Reference, digest: Digest, *, push: bool = False) -> int | None:
        """The blob's size if the repository has it, else None."""
        url = self._url(ref, f"/v2/{ref.repository}/blobs/{digest}")
        resp = self._send(ref, "HEAD", url, push=push)
        resp.close()
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise self._fail(ref, "HEAD", url, resp)
        try:
            return int(resp.headers.get("Content-Length", "-1"))
        except ValueError:
            return -1

    def fetch_blob(
        self, ref: Reference, digest: Digest, dest: str | Path, size: int | None = None
    ) -> None:
        """Stream a blob to `dest`, hashing as it comes; `dest` appears only once verified.

        A broken connection restarts the download (retry policy). A digest or size mismatch
        raises IntegrityError naming both digests, and leaves no file behind.
        """
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        url = self._url(ref, f"/v2/{ref.repository}/blobs/{digest}")

        def attempt() -> None:
            resp = self._send(ref, "GET", url, retry=False)
            if resp.status != 200:
                raise self._fail(ref, "GET", url, resp)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
            try:
                h = hashlib.sha256()
                n = 0
                with os.fdopen(fd, "wb") as f:
                    for chunk in resp.iter_bytes(CHUNK):
                        n += len(chunk)
                        if size is not None and n > size:
                            break  # more than the descriptor says: no need to read the rest
                        h.update(chunk)
                        f.write(chunk)
                    f.flush()
                    os.fsync(f.fileno())
                actual = Digest("sha256", h.hexdigest())
                if actual != digest or (size is not None and n != size):
                    got = f"{actual}" if size is None or n <= size else f"more than {size} bytes"
                    raise IntegrityError(
                        f"blob {digest} from {ref.registry}/{ref.repository}: expected {digest}"
                        f"{f' ({size} bytes)' if size is not None else ''}, got {got}"
                        f"{f' ({n} bytes)' if size is None or n <= size else ''}"
                    )
                os.replace(tmp, dest)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            finally:
                resp.close()

        self._retrier.run(attempt, self._describe(ref, "GET", url))

    def _count(self, name: str, n: int) -> None:
        with self._counters_lock:
            setattr(self.counters, name, getattr(self.counters, name) + n)

    def push_blob(
        self,
        ref: Reference,
        digest: Digest,
        size: int,
        open_blob: Callable[[], BinaryIO] | None,
        mount_from: str | None = None,
    ) -> str:
        """Make `ref`'s repository hold the blob; returns "skipped", "mounted" or "uploaded".

        HEAD first (skip if present); then a cross-repository mount when `mount_from` names a
        repository of the same registry that has it; else an upload. `open_blob` may be None for
        a blob only mountable (lazily pulled); the registry refusing the mount is then an error.
        """
        if self.head_blob(ref, digest, push=True) is not None:
            self._count("skipped", 1)
            return "skipped"
        base = self._url(ref, f"/v2/{ref.repository}/blobs/uploads/")
        describe = self._describe(ref, "upload", base)

        def attempt() -> str:
            location: str | None = None
            if mount_from and mount_from != ref.repository:
                url = base + "?" + urlencode({"mount": str(digest), "from": mount_from})
                resp = self._send(
                    ref,
                    "POST",
                    url,
                    push=True,
                    extra_scopes=(f"repository:{mount_from}:pull",),
                    follow_redirects=False,
                    retry=False,
                )
                if resp.status == 201:
                    resp.close()
                    return "mounted"
                if resp.status != 202:
                    raise self._fail(ref, "POST", url, resp)
                # 202: the registry could not mount and opened an ordinary upload instead.
                location = self._location(ref, url, resp)
            if open_blob is None:
                raise RegistryError(
                    f"registry {ref.registry}: blob {digest} is not available locally and "
                    f"could not be mounted from {mount_from or '(no source repository)'}"
                )
            if location is None:
                resp = self._send(ref, "POST", base, push=True, follow_redirects=False, retry=False)
                if resp.status != 202:
                    raise self._fail(ref, "POST", base, resp)
                location = self._location(ref, base, resp)
            if self.upload == "chunked":
                location = self._upload_chunks(ref, location, open_blob)
                body: Body = b""
                length = 0
            else:
                body, length = open_blob, size
            url = _add_query(location, {"digest": str(digest)})
            headers = (
                ("Content-Type", "application/octet-stream"),
                ("Content-Length", str(length)),
            )
            resp = self._send(
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
                raise self._fail(ref, "PUT", url, resp)
            resp.close()
            return "uploaded"

        outcome = self._retrier.run(attempt, describe)
        if outcome == "mounted":
            self._count("mounted", 1)
        else:
            self._count("uploaded", 1)
            self._count("bytes_uploaded", size)
        return outcome

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
                resp = self._send(
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
                    raise self._fail(ref, "PATCH", location, resp)
                location = self._location(ref, location, resp)
                offset += len(chunk)
        return location

    def _location(self, ref: Reference, url: str, resp: Response) -> str:
        location = resp.headers.get("Location")
        resp.close()
        if not location:
            raise RegistryError(f"{self._describe(ref, 'POST', url)}: no Location in the answer")
        return urljoin(url, location)

    # -- layouts ----------------------------------------------------------------------------

    def push_layout(
        self,
        layout_dir: str | Path,
        reference: str | Reference,
        tags: Iterable[str] = (),
        *,
        mount_from: str | Reference | None = None,
        fetch_missing: Callable[[Digest], Path] | None = None,
    ) -> Digest:
        """Push the image or index of an OCI layout to `reference` and each of `tags`.

        The layout entry is the one whose ref.name annotation equals the reference's tag, else
        the only one. An index pushes its child manifests (and their blobs) first. `mount_from`
        is a repository of the same registry that may already hold the blobs; when it is a
        Reference to another registry, blobs missing from the layout are fetched from there.
        `fetch_missing(digest)` gives a file for a blob the (sparse) layout lacks, called only
        when the destination has it neither already nor by mount.
        """
        ref = parse_reference(reference) if isinstance(reference, str) else reference
        layout = Layout.open(layout_dir)
        entry = layout.find(ref.tag)
        digest = Digest.parse(entry["digest"])
        source: Reference | None = None
        mount_repo: str | None = None
        if isinstance(mount_from, Reference):
            source = mount_from
            if mount_from.registry == ref.registry:
                mount_repo = mount_from.repository
        elif mount_from:
            mount_repo = mount_from
        self._push_tree(ref, layout, digest, entry["mediaType"], mount_repo, source, fetch_missing)
        data = layout.read_blob(digest)
        for tag in dict.fromkeys([*([ref.tag] if ref.tag else []), *tags]):
            self.put_manifest(ref.with_tag(tag), data, entry["mediaType"], tag)
        return digest

    def _push_tree(
        self,
        ref: Reference,
        layout: Layout,
        digest: Digest,
        media_type: str,
        mount_repo: str | None,
        source: Reference | None,
        fetch_missing: Callable[[Digest], Path] | None,
    ) -> None:
        data = layout.read_blob(digest)
        doc = json_input.loads(data)
        if self.has_manifest(ref, digest):
            # A manifest is only stored after all it references, so its blobs are there too.
            self._count("manifests_skipped", 1)
            return
        if media_type in INDEXES:
            for child in doc.get("manifests") or []:
                self._push_tree(
                    ref,
                    layout,
                    Digest.parse(child["digest"]),
                    child["mediaType"],
                    mount_repo,
                    source,
                    fetch_missing,
                )
        elif media_type in MANIFESTS:
            # Blobs go up in parallel, as skopeo and docker do: one connection rarely fills the
            # link, and each blob is an independent, idempotent upload.
            blobs = [doc["config"], *(doc.get("layers") or [])]
            with ThreadPoolExecutor(max_workers=min(PARALLEL_UPLOADS, len(blobs))) as pool:
                for f in [pool.submit(self._push_layout_blob, ref, layout, desc, mount_repo,
                                      source, fetch_missing) for desc in blobs]:
                    f.result()
        else:
            raise UsageError(f"{layout.root}: {digest} has unsupported media type {media_type!r}")
        self.put_manifest(ref, data, media_type, str(digest))

    def _push_layout_blob(
        self,
        ref: Reference,
        layout: Layout,
        desc: dict[str, Any],
        mount_repo: str | None,
        source: Reference | None,
        fetch_missing: Callable[[Digest], Path] | None,
    ) -> None:
        digest, size = Digest.parse(desc["digest"]), int(desc["size"])
        path = layout.blob_path(digest)
        if not layout.has_blob(digest) and source is not None and mount_repo is None:
            if self.head_blob(ref, digest, push=True) is not None:
                self._count("skipped", 1)
                return
            self.fetch_blob(source, digest, path, size)
        opener: Callable[[], BinaryIO] | None = None
        if layout.has_blob(digest):
            opener = lambda: open(path, "rb")  # noqa: E731, SIM115
        elif fetch_missing is not None:
            opener = lambda: open(fetch_missing(digest), "rb")  # noqa: E731, SIM115
        self.push_blob(ref, digest, size, opener, mount_repo)

    def pull_to_layout(
        self,
        reference: str | Reference,
        layout_dir: str | Path,
        platform: Platform | str | None = None,
        lazy: bool = False,
    ) -> PullResult:
        """Pull an image (or a whole index) into an OCI layout, creating it if needed.

        With `platform`, an index resolves to that platform's manifest, which becomes the entry.
        With `lazy`, layers are not fetched (manifests and configs always are); the result lists
        them. index.json gets the entry annotated with the reference's tag, if it has one.
        """
        ref = parse_reference(reference) if isinstance(reference, str) else reference
        if isinstance(platform, str):
            platform = Platform.parse(platform)
        layout = Layout.create(layout_dir)
        top = self.get_manifest(ref)
        descriptor = top.descriptor()
        if platform is not None and top.is_index:
            entries = top.json().get("manifests") or []
            match = next((e for e in entries if platform.matches(e.get("platform"))), None)
            top = self.resolve_platform(ref, platform, top)
            descriptor = top.descriptor()
            if match and match.get("platform"):
                descriptor["platform"] = match["platform"]
        missing: list[dict[str, Any]] = []
        fetched = self._pull_tree(ref, layout, top, lazy, missing)
        layout.add_manifest(descriptor, ref.tag)
        return PullResult(ref.with_digest(top.digest), top, fetched, tuple(missing))

    def _pull_tree(
        self,
        ref: Reference,
        layout: Layout,
        manifest: FetchedManifest,
        lazy: bool,
        missing: list[dict[str, Any]],
    ) -> int:
        fetched = 0
        doc = manifest.json()
        if manifest.is_index:
            for child in doc.get("manifests") or []:
                if child.get("mediaType") not in MANIFESTS | INDEXES:
                    continue
                sub = self.get_manifest(ref.with_digest(Digest.parse(child["digest"])))
                fetched += self._pull_tree(ref, layout, sub, lazy, missing)
        else:
            blobs = [(doc["config"], False)] + [(d, True) for d in doc.get("layers") or []]
            for desc, is_layer in blobs:
                digest, size = Digest.parse(desc["digest"]), int(desc["size"])
                if layout.has_blob(digest, size):
                    continue
                if lazy and is_layer:
                    missing.append(desc)
                    continue
                self.fetch_blob(ref, digest, layout.blob_path(digest), size)
                fetched += 1
        # Manifests last: a layout never names a manifest whose blobs are not there yet.
        layout.write_blob(manifest.data)
        return fetched + 1

    def close(self) -> None:
        close = getattr(self._transport, "close", None)
        if close is not None:
            close()


def _platform_of(entry: dict[str, Any]) -> Platform:
    p = entry.get("platform") or {}
    return Platform(p.get("os", "?"), p.get("architecture", "?"), p.get("variant"))


def _add_query(url: str, params: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = parts.query + ("&" if parts.query else "") + urlencode(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def push_layout(
    layout_dir: str | Path,
    reference: str | Reference,
    tags: Iterable[str] = (),
    *,
    client: RegistryClient | None = None,
    mount_from: str | Reference | None = None,
) -> Digest:
    """Push an OCI layout with a default client (see RegistryClient.push_layout)."""
    own = client is None
    client = client or RegistryClient()
    try:
        return client.push_layout(layout_dir, reference, tags, mount_from=mount_from)
    finally:
        if own:
            client.close()


def pull_to_layout(
    reference: str | Reference,
    layout_dir: str | Path,
    platform: Platform | str | None = None,
    lazy: bool = False,
    *,
    client: RegistryClient | None = None,
) -> PullResult:
    """Pull into an OCI layout with a default client (see RegistryClient.pull_to_layout)."""
    own = client is None
    client = client or RegistryClient()
    try:
        return client.pull_to_layout(reference, layout_dir, platform, lazy)
    finally:
        if own:
            client.close()
