"""OCI 1.1 referrers: artifacts that point at an image through `subject`, found by its digest.

A registry with the referrers API (`GET /v2/<name>/referrers/<digest>`) indexes them itself and
says so with an `OCI-Subject` header when the artifact's manifest is pushed. Without it (the
docker-registry of Debian 12 is one), the client keeps the referrers tag schema: the tag
`sha256-<hex>` of the subject holds an image index listing every referrer
(https://github.com/opencontainers/distribution-spec/blob/main/spec.md#referrers-tag-schema).
The subject itself is never changed, so its digest stays what the build made.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar, cast

from pyimg.core.digest import Digest, digest_bytes
from pyimg.errors import RegistryError, UserInputError
from pyimg.oci.media_types import OCI_EMPTY, OCI_INDEX, OCI_MANIFEST
from pyimg.oci.model import Descriptor, Index, Manifest, descriptor_for_bytes, parse_index

from .client import RegistryClient
from .pull import FetchedManifest, find_manifest
from .reference import Reference
from .tag_update import read_tag, update_tag

__all__ = [
    "EMPTY_CONFIG",
    "PARALLEL_REQUESTS",
    "Artifact",
    "OpenedArtifacts",
    "attach_artifacts",
    "in_parallel",
    "list_referrers",
    "open_artifacts",
    "referrers_tag",
]

T = TypeVar("T")
PARALLEL_REQUESTS = 8  # requests of one round in flight at once

# The empty JSON object every OCI 1.1 artifact without a config points at (image-spec 1.1).
EMPTY_CONFIG = b"{}"


@dataclass(frozen=True)
class Artifact:
    """One artifact to attach: its type, its one blob and the annotations of its manifest."""

    artifact_type: str
    blob_media_type: str
    blob: bytes = field(repr=False)
    annotations: tuple[tuple[str, str], ...] = ()


def referrers_tag(digest: Digest) -> str:
    """The tag of the referrers tag schema for `digest` (`sha256-<hex>`)."""
    return f"{digest.algorithm}-{digest.hex}"


def in_parallel(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Run `calls` at once (one round-trip for independent requests); their results in order.
    Every call finishes before the first failure is raised."""
    if len(calls) <= 1:
        return [call() for call in calls]
    with ThreadPoolExecutor(max_workers=min(len(calls), PARALLEL_REQUESTS)) as pool:
        futures = [pool.submit(call) for call in calls]
        wait(futures)
    return [f.result() for f in futures]


def attach_artifacts(
    client: RegistryClient, ref: Reference, subject: Descriptor, artifacts: Sequence[Artifact]
) -> list[Descriptor]:
    """Push each artifact as a manifest whose subject is `subject`; returns their descriptors.

    Requests, in rounds whose requests are sent together:
    1. a POST per blob (the empty config, each artifact's) asking to mount it from this same
       repository, which a registry that has it answers 201 (so no HEAD first), any other 202
       with an upload session;
    2. a PUT of each new blob;
    3. a PUT of each artifact's manifest, and a GET of the referrers tag, in case the registry
       has no referrers API (the answers to the manifests say so); read this late, just before
       it is written, so that no other signer's update of it can land in between unseen;
    4. when no answer carried OCI-Subject (no referrers API), one PUT of the referrers tag for
       all of them, then a GET that checks no other signer replaced it (tag_update.py).
    A registry that refuses an artifact raises RegistryError naming it; what was pushed before
    (the image) is untouched. `open_artifacts` sends round 1 alone, so that a caller can
    overlap it with other requests (the image's push: it needs only the subject's digest).
    """
    return open_artifacts(client, ref, subject, artifacts).finish()


class OpenedArtifacts:
    """Artifacts whose first round (`attach_artifacts`) was sent: `finish` sends the others."""

    def __init__(self, client: RegistryClient, ref: Reference, subject: Descriptor,
                 manifests: list[tuple[Artifact, bytes]], blobs: dict[Digest, bytes],
                 locations: list[object]) -> None:
        self._client, self._ref, self._subject = client, ref, subject
        self._manifests, self._blobs, self._locations = manifests, blobs, locations

    def finish(self) -> list[Descriptor]:
        """Rounds 2 to 4 of `attach_artifacts`; the artifacts' descriptors."""
        client, ref, subject, manifests = self._client, self._ref, self._subject, self._manifests
        if not manifests:
            return []
        in_parallel([partial(client.finish_upload, ref, cast("str | None", location), d, data)
                     for (d, data), location in zip(self._blobs.items(), self._locations,
                                                    strict=True)])

        def put(artifact: Artifact, data: bytes) -> tuple[Digest, str | None]:
            try:
                return client.put_manifest_answer(ref, data, OCI_MANIFEST, str(digest_bytes(data)))
            except RegistryError as e:
                raise RegistryError(
                    f"{ref.registry}/{ref.repository} refused the {artifact.artifact_type} "
                    f"artifact for {subject.digest} (the image itself is unchanged): {e.message}"
                ) from None

        tag_ref = ref.with_tag(referrers_tag(subject.digest))
        calls: list[Callable[[], object]] = [partial(put, a, data) for a, data in manifests]
        calls.append(partial(read_tag, client, tag_ref))
        results: list[object] = in_parallel(calls)
        answers = cast("list[tuple[Digest, str | None]]", results[:-1])
        pushed = [
            Descriptor(OCI_MANIFEST, digest, len(data), annotations=artifact.annotations,
                       artifact_type=artifact.artifact_type)
            for (artifact, data), (digest, _) in zip(manifests, answers, strict=True)
        ]
        if any(answer != str(subject.digest) for _, answer in answers):
            current, read_at = cast("tuple[FetchedManifest | None, float]", results[-1])
            _add_to_referrers_tag(client, tag_ref, current, read_at, pushed)
        return pushed


def open_artifacts(
    client: RegistryClient, ref: Reference, subject: Descriptor, artifacts: Sequence[Artifact]
) -> OpenedArtifacts:
    """Round 1 of `attach_artifacts` (a POST per blob)."""
    subject_desc = Descriptor(subject.media_type, subject.digest, subject.size)
    empty = descriptor_for_bytes(OCI_EMPTY, EMPTY_CONFIG)
    blobs: dict[Digest, bytes] = {}
    manifests = []
    for artifact in artifacts:
        blobs[empty.digest] = EMPTY_CONFIG
        blob = descriptor_for_bytes(artifact.blob_media_type, artifact.blob)
        blobs[blob.digest] = artifact.blob
        manifests.append((artifact, Manifest(
            config=empty,
            layers=(blob,),
            annotations=artifact.annotations,
            subject=subject_desc,
            artifact_type=artifact.artifact_type,
        ).to_bytes()))
    if not manifests:
        return OpenedArtifacts(client, ref, subject, [], {}, [])
    locations = in_parallel([partial(client.open_upload, ref, d) for d in blobs])
    return OpenedArtifacts(client, ref, subject, manifests, blobs, list(locations))


def _add_to_referrers_tag(
    client: RegistryClient, tag_ref: Reference, current: FetchedManifest | None,
    read_at: float, descriptors: list[Descriptor],
) -> None:
    def merge(tag: FetchedManifest | None) -> tuple[bytes, str] | None:
        existing: tuple[Descriptor, ...] = ()
        if tag is not None:
            existing = _index_of(tag.data, tag.media_type, f"referrers tag {tag_ref}")
        known = {d.digest for d in existing}
        merged = (*existing, *(d for d in descriptors if d.digest not in known))
        if tag is not None and len(merged) == len(existing):
            return None
        return Index(manifests=merged).to_bytes(), OCI_INDEX

    try:
        update_tag(client, tag_ref, current, merge, read_at=read_at)
    except RegistryError as e:
        raise RegistryError(
            f"{tag_ref.registry}/{tag_ref.repository} refused the referrers tag "
            f"{tag_ref.identifier} (the image itself is unchanged): {e.message}"
        ) from None


def list_referrers(client: RegistryClient, ref: Reference, subject: Digest) -> list[Descriptor]:
    """The referrers of `subject`: from the referrers API, else from the referrers tag."""
    conn = client.connection
    url = conn.url(ref, f"/v2/{ref.repository}/referrers/{subject}")
    resp = conn.send(ref, "GET", url, headers=(("Accept", OCI_INDEX),))
    if resp.status == 200:
        data = resp.read(4 << 20)
        return list(_index_of(data, OCI_INDEX, f"referrers of {subject} on {ref.registry}"))
    if resp.status not in (404, 405, 400):
        raise conn.fail(ref, "GET", url, resp)
    resp.close()
    current = find_manifest(conn, ref.with_tag(referrers_tag(subject)))
    if current is None:
        return []
    return list(_index_of(current.data, current.media_type, f"referrers tag of {subject}"))


def _index_of(data: bytes, media_type: str, where: str) -> tuple[Descriptor, ...]:
    if media_type != OCI_INDEX:
        raise RegistryError(f"{where}: expected an OCI index, got {media_type!r}")
    try:
        return parse_index(data, where).manifests
    except (ValueError, UserInputError) as e:
        raise RegistryError(f"{where}: not a readable index ({e})") from None

