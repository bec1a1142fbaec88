"""Pushes over a fake registry: layouts up, skipped when there, mounted, and what they refuse."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyimg.errors import UserInputError
from pyimg.oci.layout import Layout
from pyimg.registry.connection import Connection
from pyimg.registry.push import Pusher
from pyimg.registry.reference import parse_reference
from regfakes import FakeRegistry
from regimages import serve_image, write_layout

REF = parse_reference("127.0.0.1:5000/app:v1")


def _pusher(registry: FakeRegistry) -> Pusher:
    return Pusher(Connection(registry.transport, sleep=lambda s: None))


def test_push_layout_then_again_uploads_nothing(tmp_path: Path) -> None:
    desc = write_layout(tmp_path / "img", tag="v1")
    registry = FakeRegistry()
    pusher = _pusher(registry)
    assert pusher.push_layout(tmp_path / "img", REF, ["latest"]) == desc.digest
    for key in (str(desc.digest), "v1", "latest"):
        assert registry.manifests[("app", key)][1] == (tmp_path / "img/blobs/sha256" / desc.digest.hex).read_bytes()
    c = pusher.counters
    assert (c.uploaded, c.mounted, c.skipped, c.manifests_put) == (2, 0, 0, 3)
    again = _pusher(registry)
    again.push_layout(tmp_path / "img", REF)
    c = again.counters
    assert (c.uploaded, c.manifests_skipped, c.manifests_put) == (0, 1, 1)


def test_push_mounts_what_another_repository_holds(tmp_path: Path) -> None:
    write_layout(tmp_path / "img", tag="v1")
    registry = FakeRegistry()
    serve_image(registry, "base", "v1")  # the same blobs
    pusher = _pusher(registry)
    pusher.push_layout(tmp_path / "img", REF, mount_from="base")
    assert (pusher.counters.mounted, pusher.counters.uploaded) == (2, 0)


def test_push_refuses_a_corrupt_layout_blob(tmp_path: Path) -> None:
    write_layout(tmp_path / "img", tag="v1")
    layout = Layout(tmp_path / "img")
    path = layout.blob_path(layout.resolve("v1").digest)
    path.write_bytes(path.read_bytes() + b" ")
    with pytest.raises(UserInputError, match="is corrupt"):
        _pusher(FakeRegistry()).push_layout(tmp_path / "img", REF)


def _blob_unknown_for(registry: FakeRegistry, times: int, status: int = 400,
                      code: str = "MANIFEST_BLOB_UNKNOWN") -> list[int]:
    """docker-registry's answer to a manifest PUT while an upload of a blob it names ends."""
    import json

    from regfakes import resp

    handle = registry.transport.handler
    puts: list[int] = []
    body = json.dumps({"errors": [
        {"code": "DIGEST_INVALID", "message": "provided digest did not match uploaded content"},
        {"code": code, "message": "blob unknown to registry"}]}).encode()

    def refusing(req):  # noqa: ANN001, ANN202 - the fake's handler
        if req.method == "PUT" and "/manifests/" in req.url:
            puts.append(1)
            if len(puts) <= times:
                return resp(status, body)
        return handle(req)

    registry.transport.handler = refusing
    return puts


def _pausing_pusher(registry: FakeRegistry, pauses: list[float]) -> Pusher:
    return Pusher(Connection(registry.transport, sleep=pauses.append))


MANIFEST = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'
MEDIA = "application/vnd.oci.image.manifest.v1+json"


def test_a_manifest_refused_for_a_blob_being_linked_is_sent_again() -> None:
    registry, pauses = FakeRegistry(), []
    puts = _blob_unknown_for(registry, 2)
    _pausing_pusher(registry, pauses).put_manifest(REF, MANIFEST, MEDIA, "v1")
    assert len(puts) == 3 and pauses == [0.2, 0.5]


def test_a_blob_that_stays_unknown_gives_the_registrys_error() -> None:
    from pyimg.errors import RegistryError

    registry, pauses = FakeRegistry(), []
    puts = _blob_unknown_for(registry, 100)
    with pytest.raises(RegistryError, match="HTTP 400.*MANIFEST_BLOB_UNKNOWN") as e:
        _pausing_pusher(registry, pauses).put_manifest(REF, MANIFEST, MEDIA, "v1")
    assert e.value.codes == ("DIGEST_INVALID", "MANIFEST_BLOB_UNKNOWN")
    assert len(puts) == 4 and pauses == [0.2, 0.5, 1.0]


def test_other_refusals_of_a_manifest_are_not_sent_again() -> None:
    from pyimg.errors import RegistryError

    registry, pauses = FakeRegistry(), []
    puts = _blob_unknown_for(registry, 100, code="MANIFEST_INVALID")
    with pytest.raises(RegistryError, match="MANIFEST_INVALID"):
        _pausing_pusher(registry, pauses).put_manifest(REF, MANIFEST, MEDIA, "v1")
    assert len(puts) == 1 and pauses == []
