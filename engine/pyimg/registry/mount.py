"""Cross-repository blob mounts: a registry links a blob another of its repositories holds.

A push of an image on a pulled base mounts the base's layers from the repository they were
pulled from instead of uploading them (or even downloading them: a lazily pulled layer may exist
only there). A registry that cannot mount opens an ordinary upload session instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from pyimg.core.digest import Digest

from .connection import Connection
from .reference import Reference

__all__ = ["BlobOrigin", "blob_origin", "mount_blob"]


@dataclass(frozen=True, slots=True)
class BlobOrigin:
    """Where the blobs of a push may already be, besides the layout.

    `repository` is a repository of the destination's registry to mount from; `source` is an
    image on another registry, read from when the layout lacks a blob.
    """

    repository: str | None = None
    source: Reference | None = None


def blob_origin(dest: Reference, mount_from: str | Reference | None) -> BlobOrigin:
    """`mount_from` as a push takes it: a repository name of `dest`'s registry, or a reference
    (mounted from when it is on the same registry, else read from)."""
    if isinstance(mount_from, Reference):
        same = mount_from.registry == dest.registry
        return BlobOrigin(mount_from.repository if same else None, mount_from)
    return BlobOrigin(mount_from or None, None)


def mount_blob(conn: Connection, ref: Reference, digest: Digest, repository: str) -> str | None:
    """Ask `ref`'s registry to mount `digest` from `repository` into `ref`'s repository.

    None when it did (201). Otherwise (202) the URL of the upload session the registry opened
    instead, for the caller to upload through. Retryable failures raise for the caller's retry
    of the whole upload.
    """
    base = conn.url(ref, f"/v2/{ref.repository}/blobs/uploads/")
    url = base + "?" + urlencode({"mount": str(digest), "from": repository})
    resp = conn.send(
        ref,
        "POST",
        url,
        push=True,
        extra_scopes=(f"repository:{repository}:pull",),
        follow_redirects=False,
        retry=False,
    )
    if resp.status == 201:
        resp.close()
        return None
    if resp.status != 202:
        raise conn.fail(ref, "POST", url, resp)
    return conn.location(ref, url, resp)
