"""Cross-repository mounts: where a push may find blobs, and the mount request itself."""

from __future__ import annotations

from pyimg.core.digest import digest_bytes
from pyimg.registry.connection import Connection
from pyimg.registry.mount import BlobOrigin, blob_origin, mount_blob
from pyimg.registry.reference import parse_reference
from regfakes import FakeRegistry

DEST = parse_reference("127.0.0.1:5000/app:v1")


def test_blob_origin_mounts_only_from_the_same_registry() -> None:
    same = parse_reference("127.0.0.1:5000/base")
    other = parse_reference("docker.io/library/alpine")
    assert blob_origin(DEST, None) == BlobOrigin()
    assert blob_origin(DEST, "base") == BlobOrigin("base", None)
    assert blob_origin(DEST, same) == BlobOrigin("base", same)
    assert blob_origin(DEST, other) == BlobOrigin(None, other)


def test_mount_blob_mounts_or_hands_back_an_upload_session() -> None:
    registry = FakeRegistry()
    digest = registry.put_blob("base", b"layer")
    conn = Connection(registry.transport, sleep=lambda s: None)
    assert mount_blob(conn, DEST, digest_bytes(b"layer"), "base") is None
    assert registry.blobs[("app", digest)] == b"layer"
    # A registry that cannot mount opens an upload instead: its absolute URL comes back.
    refused = FakeRegistry(mounts=False)
    conn = Connection(refused.transport, sleep=lambda s: None)
    location = mount_blob(conn, DEST, digest_bytes(b"layer"), "base")
    assert location == "http://127.0.0.1:5000/v2/app/blobs/uploads/session"
    assert refused.log == ["POST /v2/app/blobs/uploads/"]
