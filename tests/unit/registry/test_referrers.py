"""registry/referrers.py: OCI 1.1 referrers through the API when the registry has one, else
through the referrers tag schema, merged, never duplicated; a refusal names the artifact."""

from __future__ import annotations

import json

import pytest
from pyimg.errors import RegistryError
from pyimg.oci.media_types import OCI_MANIFEST
from pyimg.oci.model import descriptor_for_bytes
from pyimg.registry import tag_update
from pyimg.registry.client import RegistryClient
from pyimg.registry.reference import parse_reference
from pyimg.registry.referrers import Artifact, attach_artifacts, list_referrers, referrers_tag
from regfakes import FakeRegistry, resp

REF = parse_reference("reg.test/team/app:v1")
IMAGE = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'


@pytest.fixture(autouse=True)
def _no_settling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tag_update, "SETTLE_SECONDS", (0.0, 0.0))


def _setup(**kw: bool) -> tuple[FakeRegistry, RegistryClient]:
    fake = FakeRegistry(**kw)
    fake.put_manifest("team/app", OCI_MANIFEST, IMAGE, "v1")
    return fake, RegistryClient(fake.transport, insecure=["reg.test"], sleep=lambda s: None)


def _artifact(kind: str, body: bytes) -> Artifact:
    return Artifact(kind, kind, body, (("note", kind),))


SUBJECT = descriptor_for_bytes(OCI_MANIFEST, IMAGE)
TAG = referrers_tag(SUBJECT.digest)


def test_registry_without_the_api_gets_one_merged_referrers_tag() -> None:
    fake, client = _setup()
    first = attach_artifacts(client, REF, SUBJECT, [_artifact("a/one", b"1"), _artifact("a/two", b"2")])
    # Read (with the blobs' uploads), written once for both, read again to check the write.
    assert [f"GET /v2/team/app/manifests/{TAG}", f"PUT /v2/team/app/manifests/{TAG}",
            f"GET /v2/team/app/manifests/{TAG}"] == [line for line in fake.log if TAG in line]
    attach_artifacts(client, REF, SUBJECT, [_artifact("a/three", b"3"), _artifact("a/one", b"1")])
    media_type, data = fake.manifests[("team/app", TAG)]
    entries = json.loads(data)["manifests"]
    assert [e["artifactType"] for e in entries] == ["a/one", "a/two", "a/three"]
    assert [str(d.digest) for d in list_referrers(client, REF, SUBJECT.digest)] == [
        *(str(d.digest) for d in first), entries[2]["digest"]
    ]
    assert fake.manifests[("team/app", "v1")] == (OCI_MANIFEST, IMAGE)  # the image untouched
    for entry in entries:
        doc = json.loads(fake.manifests[("team/app", entry["digest"])][1])
        assert doc["subject"]["digest"] == str(SUBJECT.digest)
        assert doc["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"


def test_registry_with_the_api_needs_no_tag() -> None:
    fake, client = _setup(referrers_api=True)
    pushed = attach_artifacts(client, REF, SUBJECT, [_artifact("a/one", b"1")])
    # Read with the first round in case the registry lacks the API (only the manifest's
    # answer tells), never written.
    assert [line for line in fake.log if TAG in line] == [f"GET /v2/team/app/manifests/{TAG}"]
    found = list_referrers(client, REF, SUBJECT.digest)
    assert [(d.digest, d.artifact_type) for d in found] == [(pushed[0].digest, "a/one")]


def test_a_refused_artifact_is_one_error_naming_it() -> None:
    fake, client = _setup()
    handle = fake.transport.handler

    def refuse(req):  # noqa: ANN001, ANN202 - the fake's handler signature
        if req.method == "PUT" and "/manifests/sha256:" in req.url:
            return resp(400, b'{"errors":[{"code":"MANIFEST_INVALID","message":"no"}]}')
        return handle(req)

    fake.transport.handler = refuse
    with pytest.raises(RegistryError) as e:
        attach_artifacts(client, REF, SUBJECT, [_artifact("a/one", b"1")])
    assert "refused the a/one artifact" in str(e.value)
    assert "the image itself is unchanged" in str(e.value) and "MANIFEST_INVALID" in str(e.value)
    assert fake.manifests[("team/app", "v1")] == (OCI_MANIFEST, IMAGE)


def test_a_registry_refusing_the_mount_parameters_gets_plain_uploads() -> None:
    """The POST that asks to mount a blob from the same repository (to skip a present one) is
    an optimisation: a registry that refuses it outright gets an ordinary upload instead."""
    fake, client = _setup()
    handle = fake.transport.handler

    def no_mounts(req):  # noqa: ANN001, ANN202 - the fake's handler signature
        if req.method == "POST" and "mount=" in req.url:
            return resp(400, b'{"errors":[{"code":"UNSUPPORTED","message":"no mounts"}]}')
        return handle(req)

    fake.transport.handler = no_mounts
    pushed = attach_artifacts(client, REF, SUBJECT, [_artifact("a/one", b"1")])
    assert [d.artifact_type for d in list_referrers(client, REF, SUBJECT.digest)] == ["a/one"]
    assert pushed and client.counters.uploaded == 2  # the empty config and the artifact's blob
