"""registry/tag_update.py: a tag's read-modify-write keeps other writers' updates, with the
registry's conditional PUT (412) and without it (the check after the write)."""

from __future__ import annotations

import json

import pytest
from pyimg.core.digest import digest_bytes
from pyimg.errors import RegistryError
from pyimg.oci.media_types import OCI_INDEX
from pyimg.registry import tag_update
from pyimg.registry.client import RegistryClient
from pyimg.registry.pull import FetchedManifest
from pyimg.registry.reference import parse_reference
from pyimg.registry.tag_update import update_tag
from regfakes import FakeRegistry, resp

TAG = parse_reference("reg.test/team/app:list")


def _index(*names: str) -> bytes:
    """An index whose annotations stand for the entries of each writer."""
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [],
                       "annotations": {n: "" for n in sorted(names)}}).encode()


def _names(data: bytes) -> set[str]:
    return set(json.loads(data)["annotations"]) if data else set()


def _adding(name: str) -> tag_update.Merge:
    def merge(tag: FetchedManifest | None) -> tuple[bytes, str] | None:
        have = _names(tag.data) if tag is not None else set()
        if name in have:
            return None
        return _index(*have, name), OCI_INDEX

    return merge


@pytest.fixture
def fake() -> FakeRegistry:
    return FakeRegistry()


def _client(fake: FakeRegistry) -> RegistryClient:
    return RegistryClient(fake.transport, insecure=["reg.test"], sleep=lambda s: None)


def _current(fake: FakeRegistry) -> bytes:
    return fake.manifests[("team/app", "list")][1]


def _current_names(fake: FakeRegistry) -> set[str]:
    return _names(_current(fake))


def test_an_update_lost_to_another_writer_is_merged_again(fake: FakeRegistry) -> None:
    """A registry that ignores If-Match: another writer's PUT lands just after this one's; the
    check after the write sees it and writes the merge of both."""
    handle = fake.transport.handler
    raced = []

    def other_writer_after_first_put(req):  # noqa: ANN001, ANN202 - the fake's handler
        answer = handle(req)
        if req.method == "PUT" and req.url.endswith("/manifests/list") and not raced:
            raced.append(True)
            fake.put_manifest("team/app", OCI_INDEX, _index("b"), "list")  # read {} too, wrote {b}
        return answer

    fake.transport.handler = other_writer_after_first_put
    update_tag(_client(fake), TAG, None, _adding("a"), sleep=lambda s: None)
    assert _current_names(fake) == {"a", "b"}


def test_a_registry_that_honours_if_match_answers_412_and_the_update_starts_over(
        fake: FakeRegistry) -> None:
    fake.put_manifest("team/app", OCI_INDEX, _index("x"), "list")
    handle = fake.transport.handler
    seen = []

    def conditional(req):  # noqa: ANN001, ANN202 - the fake's handler
        if req.method == "PUT" and req.url.endswith("/manifests/list"):
            headers = dict(req.headers)
            seen.append(headers.get("If-Match"))
            expected = f'"{digest_bytes(_current(fake))}"'
            if headers.get("If-Match") != expected:
                return resp(412)
        return handle(req)

    fake.transport.handler = conditional
    stale = FetchedManifest(_index(), OCI_INDEX, digest_bytes(_index()))  # read before x
    update_tag(_client(fake), TAG, stale, _adding("a"), sleep=lambda s: None)
    assert _current_names(fake) == {"a", "x"}
    read_then, read_now = digest_bytes(_index()), digest_bytes(_index("x"))
    assert seen == [f'"{read_then}"', f'"{read_now}"']


def test_writers_that_keep_replacing_the_tag_give_one_error(fake: FakeRegistry) -> None:
    handle = fake.transport.handler

    def always_412(req):  # noqa: ANN001, ANN202 - the fake's handler
        return resp(412) if req.method == "PUT" else handle(req)

    fake.transport.handler = always_412
    with pytest.raises(RegistryError, match="other writers replaced the tag list 6 times"):
        update_tag(_client(fake), TAG, None, _adding("a"), sleep=lambda s: None)


def _refusing_the_first_puts(fake: FakeRegistry, times: int) -> list[int]:
    """docker-registry's answer while another writer's upload of a blob the manifest names ends."""
    handle = fake.transport.handler
    refused: list[int] = []
    body = json.dumps({"errors": [
        {"code": "DIGEST_INVALID", "message": "provided digest did not match uploaded content"},
        {"code": "MANIFEST_BLOB_UNKNOWN", "message": "blob unknown to registry"}]}).encode()

    def refusing(req):  # noqa: ANN001, ANN202 - the fake's handler
        if req.method == "PUT" and req.url.endswith("/manifests/list") and len(refused) < times:
            refused.append(1)
            return resp(400, body)
        return handle(req)

    fake.transport.handler = refusing
    return refused


def test_a_manifest_refused_for_a_blob_another_writer_is_linking_is_written_again(
        fake: FakeRegistry) -> None:
    refused = _refusing_the_first_puts(fake, 2)
    update_tag(_client(fake), TAG, None, _adding("a"), sleep=lambda s: None)
    assert len(refused) == 2 and _current_names(fake) == {"a"}



class _Clock:
    """A monotonic clock that the fake registry moves on by `per_request` at each request."""

    def __init__(self, fake: FakeRegistry, per_request: float) -> None:
        self.now = 100.0
        handle = fake.transport.handler

        def timed(req):  # noqa: ANN001, ANN202 - the fake's handler
            self.now += per_request
            return handle(req)

        fake.transport.handler = timed

    def __call__(self) -> float:
        return self.now


def test_a_read_older_than_fresh_seconds_is_made_again_before_the_write(
        fake: FakeRegistry) -> None:
    """A registry that ignores If-Match: the tag was read (absent) with a signer's first requests;
    another writer set it while this one uploaded its blobs. Merging from that read would write
    the other writer's entry over, after it had checked its own write."""
    clock = _Clock(fake, per_request=0.001)
    read_at = clock()
    clock.now += 1.0  # the blob uploads and the artifacts' manifests
    fake.put_manifest("team/app", OCI_INDEX, _index("b"), "list")  # the other writer, checked
    update_tag(_client(fake), TAG, None, _adding("a"), read_at=read_at, clock=clock,
               sleep=lambda s: None)
    assert _current_names(fake) == {"a", "b"}


def test_a_read_just_made_is_not_made_again(fake: FakeRegistry) -> None:
    clock = _Clock(fake, per_request=0.001)
    update_tag(_client(fake), TAG, None, _adding("a"), read_at=clock(), clock=clock,
               sleep=lambda s: None)
    assert fake.log == ["PUT /v2/team/app/manifests/list",
                        "GET /v2/team/app/manifests/list"]  # the write, and the check


def test_the_check_waits_at_least_twice_as_long_as_the_write_took(fake: FakeRegistry) -> None:
    """A writer as slow as this one, which read the tag just before this write, has written
    by the check."""
    clock = _Clock(fake, per_request=0.4)  # a slow registry: 0.4 s a request
    pauses: list[float] = []

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        clock.now += seconds

    update_tag(_client(fake), TAG, None, _adding("a"), read_at=clock(), clock=clock, sleep=sleep)
    assert pauses == [pytest.approx(0.8)]  # twice the PUT's 0.4 s from the read
    fast: list[float] = []
    fake2 = FakeRegistry()
    quick = _Clock(fake2, per_request=0.001)
    update_tag(_client(fake2), TAG, None, _adding("a"), read_at=quick(), clock=quick,
               sleep=fast.append)
    assert len(fast) == 1 and tag_update.SETTLE_SECONDS[0] <= fast[0] <= tag_update.SETTLE_SECONDS[1]
