"""signing/attach.py over a fake registry: a signature and its attestations in one batch of
referrers, verified; what verify refuses."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from pyimg.core.digest import Digest
from pyimg.errors import UsageError, VerificationError
from pyimg.oci.media_types import OCI_INDEX, OCI_MANIFEST
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


def _index_client(extra: tuple[dict, ...] = ()) -> tuple[FakeRegistry, RegistryClient, str,
                                                         dict[str, Digest]]:
    """A fake registry holding an index of two images (linux/amd64, linux/arm64) tagged v1,
    and the `extra` entries after them."""
    fake = FakeRegistry()
    images = {}
    entries = []
    for arch in ("amd64", "arm64"):
        data = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "annotations": {"arch": arch}}).encode()
        digest = fake.put_manifest("team/app", OCI_MANIFEST, data, arch)
        images[f"linux/{arch}"] = Digest.parse(digest)
        entries.append({"mediaType": OCI_MANIFEST, "digest": digest, "size": len(data),
                        "platform": {"os": "linux", "architecture": arch}})
    entries += extra
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
    digest = fake.put_manifest("team/app", OCI_INDEX, index, "v1")
    client = RegistryClient(fake.transport, insecure=["reg.test"], sleep=lambda s: None)
    return fake, client, digest, images


def test_an_index_is_signed_with_each_image_it_lists_and_verified_so() -> None:
    """As `cosign sign --recursive`: the index and each listed image get a signature; an SBOM
    `about` a platform image is attached to that image; verify checks every one, and requires
    an SBOM of each image (not of the index) and a provenance of the index and of each image."""
    fake, client, digest, images = _index_client()
    key = generate_key()
    amd64, arm64 = images["linux/amd64"], images["linux/arm64"]
    sign_image(client, REF, key, predicates=[
        PROVENANCE,
        Predicate(SBOM.data, "spdx", "SBOM of linux/amd64", amd64),
        Predicate(SBOM.data, "spdx", "SBOM of linux/arm64", arm64),
        Predicate(PROVENANCE.data, "slsaprovenance", "provenance of linux/arm64", arm64),
    ])
    found = verify_image(client, REF, key.public, ["sbom"])
    assert str(found.subject.digest) == digest
    assert found.predicate_types == ("https://slsa.dev/provenance/v1",)
    assert [(p, str(v.subject.digest), v.signatures, v.predicate_types) for p, v in found.images] == [
        ("linux/amd64", str(amd64), 1, ("https://spdx.dev/Document",)),
        ("linux/arm64", str(arm64), 1, ("https://slsa.dev/provenance/v1",
                                         "https://spdx.dev/Document")),
    ]
    # A platform image by digest verifies on its own too.
    alone = verify_image(client, REF.with_digest(arm64), key.public, ["sbom", "provenance"])
    assert alone.images == ()
    # The amd64 image has no provenance of its own: required of each image, it fails naming it.
    with pytest.raises(VerificationError, match=rf"@{amd64} \(the linux/amd64 image of the "
                                                rf"index {digest}\): no provenance attestation"):
        verify_image(client, REF, key.public, ["provenance"])


def test_an_unsigned_image_of_a_signed_index_fails_verify() -> None:
    fake, client, digest, images = _index_client()
    key = generate_key()
    sign_image(client, REF, key, subject=client.get_manifest(REF).descriptor())  # the index only
    with pytest.raises(VerificationError, match=rf"@{images['linux/amd64']} \(the linux/amd64 "
                                                r"image of the index .*\): not signed"):
        verify_image(client, REF, key.public)


def test_a_predicate_about_an_image_the_index_does_not_list_pushes_nothing() -> None:
    fake, client, digest, images = _index_client()
    before = len(fake.manifests)
    other = Digest.parse("sha256:" + "ab" * 32)
    with pytest.raises(UsageError, match=rf"SBOM of linux/s390x: about {other}, which "
                                         rf"reg.test/team/app@{digest} does not list"):
        sign_image(client, REF, generate_key(),
                   predicates=[Predicate(SBOM.data, "spdx", "SBOM of linux/s390x", other)])
    assert len(fake.manifests) == before


def test_buildkit_attestation_manifests_of_an_index_are_not_signed_as_images() -> None:
    """BuildKit lists its attestation manifests in the index (platform unknown/unknown): they
    are no image to sign or to require a signature of."""
    attestation = {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "cd" * 32, "size": 2,
                   "platform": {"os": "unknown", "architecture": "unknown"},
                   "annotations": {"vnd.docker.reference.type": "attestation-manifest",
                                   "vnd.docker.reference.digest": "sha256:" + "ef" * 32}}
    fake, client, digest, images = _index_client((attestation,))
    key = generate_key()
    sign_image(client, REF, key)
    found = verify_image(client, REF, key.public)
    assert [platform for platform, _ in found.images] == ["linux/amd64", "linux/arm64"]
