"""signing/attach.py over a fake registry: a signature and its attestations in one batch of
referrers, verified; what verify refuses."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pyimg.errors import UsageError, VerificationError
from pyimg.oci.media_types import OCI_MANIFEST
from pyimg.registry import tag_update
from pyimg.registry.client import RegistryClient
from pyimg.registry.reference import parse_reference
from pyimg.signing.attach import Predicate, attest_image, sign_image, verify_image
from pyimg.signing.keys import generate_key

sys.path.insert(0, str(Path(__file__).parents[1] / "registry"))
from regfakes import FakeRegistry  # noqa: E402

REF = parse_reference("reg.test/team/app:v1")
IMAGE = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'
SBOM = Predicate(b'{"spdxVersion":"SPDX-2.3"}', "spdx", "sbom.json")
PROVENANCE = Predicate(b'{"buildDefinition":{}}', "slsaprovenance", "provenance.json")


@pytest.fixture(autouse=True)
def _no_settling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tag_update, "SETTLE_SECONDS", (0.0, 0.0))


def _client() -> tuple[FakeRegistry, RegistryClient, str]:
    fake = FakeRegistry()
    digest = fake.put_manifest("team/app", OCI_MANIFEST, IMAGE, "v1")
    return fake, RegistryClient(fake.transport, insecure=["reg.test"], sleep=lambda s: None), digest


def test_sign_with_attestations_is_one_batch_and_verifies() -> None:
    fake, client, digest = _client()
    key = generate_key()
    sign_image(client, REF, key, predicates=[SBOM, PROVENANCE])
    tag = digest.replace(":", "-")
    # The referrers tag: read, written once for the batch, read again to check the write.
    assert [line.split(" ")[0] for line in fake.log if line.endswith(f"/manifests/{tag}")] == [
        "GET", "PUT", "GET"
    ]
    found = verify_image(client, REF, key.public, ["sbom", "provenance"])
    assert (found.signatures, found.bundles) == (1, 1)
    assert found.predicate_types == ("https://slsa.dev/provenance/v1", "https://spdx.dev/Document")
    with pytest.raises(VerificationError, match="no signature in sha256-.*verifies with the key"):
        verify_image(client, REF, generate_key().public)


def test_attestations_are_checked_before_anything_is_pushed() -> None:
    fake, client, digest = _client()
    key = generate_key()
    before = len(fake.manifests)
    with pytest.raises(UsageError, match="not valid JSON"):
        attest_image(client, REF, key, [SBOM, Predicate(b"{", "spdx", "broken.json")])
    with pytest.raises(UsageError, match="--type 'spdz'"):
        attest_image(client, REF, key, [Predicate(b"{}", "spdz", "x.json")])
    assert len(fake.manifests) == before
    sign_image(client, REF, key)
    with pytest.raises(VerificationError, match="no provenance attestation signed by the key"):
        verify_image(client, REF, key.public, ["provenance"])


def test_signing_again_uploads_nothing_and_keeps_one_signature() -> None:
    """Every blob is asked for with a POST that mounts it from the same repository: present
    ones are skipped in that one request (no HEAD, no PUT of a blob)."""
    fake, client, _ = _client()
    key = generate_key()
    sign_image(client, REF, key, predicates=[SBOM])
    del fake.log[:]
    sign_image(client, REF, key, predicates=[SBOM])
    assert not [line for line in fake.log if line.startswith(("PUT /v2/team/app/blobs", "HEAD"))]
    assert verify_image(client, REF, key.public).signatures == 1
