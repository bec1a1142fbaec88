"""RegistryClient: one object for the verbs (pull.py, push.py, mount.py) over one Connection.

Callers that talk to registries hold a client: it owns the transport, credentials and token
cache every request shares (connection.py), and counts what pushes did. It speaks oci.model
types: descriptors, platforms, manifests and indexes, never JSON dicts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO, Literal

from pyimg.core.digest import Digest
from pyimg.oci.model import Platform

from . import pull
from .auth import CredentialStore
from .connection import Connection
from .pull import FetchedManifest, PullResult
from .push import DEFAULT_CHUNK, BlobOutcome, PushCounters, Pusher
from .reference import Reference, parse_reference
from .transport import RetryPolicy, Transport

__all__ = ["RegistryClient", "push_layout"]


class RegistryClient:
    """A client for one or more registries, sharing a transport, credentials and token cache.

    `upload` is "monolithic" or "chunked" (see push.py); `sleep`, `seed` and `clock` make
    retries and token expiry testable.
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
        chunk_size: int = DEFAULT_CHUNK,
    ) -> None:
        self.connection = Connection(
            transport,
            credentials,
            insecure=insecure,
            retry_policy=retry_policy,
            sleep=sleep,
            seed=seed,
            clock=clock,
        )
        self._pusher = Pusher(self.connection, upload, chunk_size)

    @property
    def retries(self) -> int:
        """How many times a request was retried so far (for tests and progress)."""
        return self.connection.retries

    @property
    def token_fetches(self) -> int:
        return self.connection.token_fetches

    @property
    def counters(self) -> PushCounters:
        return self._pusher.counters

    # -- pull -------------------------------------------------------------------------------

    def get_manifest(self, ref: Reference) -> FetchedManifest:
        return pull.get_manifest(self.connection, ref)

    def resolve_platform(
        self, ref: Reference, platform: Platform, fetched: FetchedManifest | None = None
    ) -> FetchedManifest:
        return pull.resolve_platform(self.connection, ref, platform, fetched)

    def fetch_blob(
        self, ref: Reference, digest: Digest, dest: str | Path, size: int | None = None
    ) -> None:
        pull.fetch_blob(self.connection, ref, digest, dest, size)

    def pull_to_layout(
        self,
        reference: str | Reference,
        layout_dir: str | Path,
        platform: Platform | None = None,
        lazy: bool = False,
    ) -> PullResult:
        return pull.pull_to_layout(self.connection, _reference(reference), layout_dir, platform, lazy)

    # -- push -------------------------------------------------------------------------------

    def has_manifest(self, ref: Reference, digest: Digest) -> bool:
        return self._pusher.has_manifest(ref, digest)

    def put_manifest(self, ref: Reference, data: bytes, media_type: str, identifier: str) -> Digest:
        return self._pusher.put_manifest(ref, data, media_type, identifier)

    def put_manifest_answer(
        self, ref: Reference, data: bytes, media_type: str, identifier: str,
        replacing: Digest | None | Literal["any"] = "any",
    ) -> tuple[Digest, str | None]:
        return self._pusher.put_manifest_answer(ref, data, media_type, identifier, replacing)

    def find_manifest(self, ref: Reference) -> FetchedManifest | None:
        return pull.find_manifest(self.connection, ref)

    def read_small_blob(self, ref: Reference, digest: Digest) -> bytes:
        return pull.read_small_blob(self.connection, ref, digest)

    def head_blob(self, ref: Reference, digest: Digest, *, push: bool = False) -> int | None:
        return self._pusher.head_blob(ref, digest, push=push)

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
        return self._pusher.push_blob(
            ref, digest, size, open_blob, mount_from, check_first=check_first
        )

    def open_upload(self, ref: Reference, digest: Digest) -> str | None:
        return self._pusher.open_upload(ref, digest)

    def finish_upload(self, ref: Reference, location: str | None, digest: Digest,
                      data: bytes) -> BlobOutcome:
        return self._pusher.finish_upload(ref, location, digest, data)

    def push_layout(
        self,
        layout_dir: str | Path,
        reference: str | Reference,
        tags: Iterable[str] = (),
        *,
        mount_from: str | Reference | None = None,
        fetch_missing: Callable[[Digest], Path] | None = None,
    ) -> Digest:
        return self._pusher.push_layout(
            layout_dir,
            _reference(reference),
            tags,
            mount_from=mount_from,
            fetch_missing=fetch_missing,
        )

    def close(self) -> None:
        self.connection.close()


def _reference(reference: str | Reference) -> Reference:
    return parse_reference(reference) if isinstance(reference, str) else reference


def push_layout(
    layout_dir: str | Path,
    reference: str | Reference,
    tags: Iterable[str] = (),
    *,
    client: RegistryClient | None = None,
    mount_from: str | Reference | None = None,
) -> Digest:
    """Push an OCI layout with a default client (see Pusher.push_layout)."""
    own = client is None
    client = client or RegistryClient()
    try:
        return client.push_layout(layout_dir, reference, tags, mount_from=mount_from)
    finally:
        if own:
            client.close()

