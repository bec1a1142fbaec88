"""OCI 1.1 referrers: artifacts that point at an image through `subject`, found by its digest.

A registry with the referrers API (`GET /v2/<name>/referrers/<digest>`) indexes them itself and
says so with an `OCI-Subject` header when the artifact's manifest is pushed. Without it (the
docker-registry of Debian 12 is one), the client keeps the referrers tag schema: the tag
`sha256-<hex>` of the subject holds an image index listing every referrer
(https://github.com/opencontainers/distribution-spec/blob/main/spec.md#referrers-tag-schema).
The subject itself is never changed, so its digest stays what the build made.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from pyimg.core.digest import Digest
from pyimg.errors import RegistryError, UserInputError
from pyimg.oci.media_types import OCI_EMPTY, OCI_INDEX, OCI_MANIFEST
from pyimg.oci.model import Descriptor, Index, Manifest, descriptor_for_bytes, parse_index

from .client import RegistryClient
from .pull import find_manifest
from .reference import Reference

__all__ = ["EMPTY_CONFIG", "Artifact", "attach_artifacts", "list_referrers", "referrers_tag"]

# The empty JSON object every OCI 1.1 artifact without a config points at (image-spec 1.1).
EMPTY_CONFIG = b"{}"


@dataclass(frozen=True)
class Artifact:
    """One artifact to attach: its type, its one blob and the annotations of its manifest."""

    artifact_type: str
    blob_media_type: str
    blob: bytes = field(repr=False)
    annotations: tuple[tuple[str, str], ...] = ()


def _opener(data: bytes) -> Callable[[], BinaryIO]:
    return lambda: io.BytesIO(data)


def referrers_tag(digest: Digest) -> str:
    """The tag of the referrers tag schema for `digest` (`sha256-<hex>`)."""
    return f"{digest.algorithm}-{digest.hex}"


def attach_artifacts(
    client: RegistryClient, ref: Reference, subject: Descriptor, artifacts: Sequence[Artifact]
) -> list[Descriptor]:
    """Push each artifact as a manifest whose subject is `subject`; returns their descriptors.

    Requests: the empty config once (HEAD, then upload if missing), per artifact its blob
    (POST, PUT: a signed document is new, so no HEAD first) and its manifest (PUT); when the
    registry has no referrers API, one GET and one PUT of the referrers tag for all of them. A registry that refuses an
    artifact raises RegistryError naming it; what was pushed before (the image) is untouched.
    """
    subject_desc = Descriptor(subject.media_type, subject.digest, subject.size)
    empty = descriptor_for_bytes(OCI_EMPTY, EMPTY_CONFIG)
    if artifacts:
        client.push_blob(ref, empty.digest, empty.size, _opener(EMPTY_CONFIG))
    pushed: list[Descriptor] = []
    needs_tag = False
    for artifact in artifacts:
        blob = descriptor_for_bytes(artifact.blob_media_type, artifact.blob)
        client.push_blob(ref, blob.digest, blob.size, _opener(artifact.blob), check_first=False)
        manifest = Manifest(
            config=empty,
            layers=(blob,),
            annotations=artifact.annotations,
            subject=subject_desc,
            artifact_type=artifact.artifact_type,
        )
        data = manifest.to_bytes()
        try:
            digest, answer = client.put_manifest_answer(ref, data, OCI_MANIFEST, str(manifest.descriptor().digest))
        except RegistryError as e:
            raise RegistryError(
                f"{ref.registry}/{ref.repository} refused the {artifact.artifact_type} artifact "
                f"for {subject.digest} (the image itself is unchanged): {e.message}"
            ) from None
        needs_tag = needs_tag or answer != str(subject.digest)
        pushed.append(
            Descriptor(
                OCI_MANIFEST,
                digest,
                len(data),
                annotations=artifact.annotations,
                artifact_type=artifact.artifact_type,
            )
        )
    if needs_tag:
        _add_to_referrers_tag(client, ref, subject.digest, pushed)
    return pushed


def _add_to_referrers_tag(
    client: RegistryClient, ref: Reference, subject: Digest, descriptors: list[Descriptor]
) -> None:
    tag_ref = ref.with_tag(referrers_tag(subject))
    current = find_manifest(client.connection, tag_ref)
    existing: tuple[Descriptor, ...] = ()
    if current is not None:
        existing = _index_of(current.data, current.media_type, f"referrers tag {tag_ref}")
    known = {d.digest for d in existing}
    merged = (*existing, *(d for d in descriptors if d.digest not in known))
    if current is not None and len(merged) == len(existing):
        return
    data = Index(manifests=merged).to_bytes()
    try:
        client.put_manifest(tag_ref, data, OCI_INDEX, tag_ref.identifier)
    except RegistryError as e:
        raise RegistryError(
            f"{ref.registry}/{ref.repository} refused the referrers tag {tag_ref.identifier} "
            f"(the image itself is unchanged): {e.message}"
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

