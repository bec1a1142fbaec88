"""A signed push of an oci_image_index against a real docker-registry (no referrers API: the
referrers tag schema carries everything): the index and each platform image are signed, each
platform image carries the SBOM `pyimg sbom --platform` writes and the provenance, the index its
provenance; verify checks all of it, and an independent verifier accepts a platform's SBOM."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from pyimg.core.digest import Digest
from pyimg.registry.reference import parse_reference
from pyimg.registry.referrers import Artifact, attach_artifacts, referrers_tag
from test_signing import (
    BUNDLE,
    DSSE,
    PASSWORD,
    SIGSTORE_JS,
    VERIFY_JS,
    _client,
    _one_error,
    _referrer_blobs,
    _securesystemslib_verify,
    _tampered,
    keys,  # noqa: F401 - the fixture
    pyimg,
)
from workspace_helpers import Workspace

pytestmark = pytest.mark.slow

PLATFORMS = ("linux/amd64", "linux/arm64/v8")
SPDX = "https://spdx.dev/Document"
SLSA = "https://slsa.dev/provenance/v1"


def _statement(envelope: bytes) -> dict:
    return json.loads(base64.b64decode(json.loads(envelope)["payload"]))


def _by_type(blobs: dict[str, list[bytes]]) -> dict[str, dict]:
    """predicateType -> the statement of each DSSE attestation among `blobs`."""
    return {s["predicateType"]: s for s in map(_statement, blobs.get(DSSE, []))}


def _index_workspace(tmp_path: Path, host: str, repo: str) -> Workspace:
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    ws.write("app/hello.txt", "hello\n")
    ws.write("app/BUILD.pyimg", f"""
        pkg_tar(name = "layer", srcs = ["hello.txt"], package_dir = "/app")
        oci_image(name = "image", tars = [":layer"], entrypoint = ["/bin/true"])
        oci_image_index(name = "index", images = [":image"], platforms = {list(PLATFORMS)!r})
        oci_push(name = "push", image = ":index", repository = "{host}/{repo}",
                 remote_tags = ["v1"], sign_key = "env://PUSH_KEY", sign_key_password_env = "PUSH_PW")
        """)
    return ws


def _platform_digests(ws: Workspace) -> dict[str, Digest]:
    layout = ws.out("app/index")
    top = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    index = json.loads((layout / "blobs/sha256" / top.split(":")[1]).read_bytes())
    return {"/".join(filter(None, (e["platform"]["os"], e["platform"]["architecture"],
                                   e["platform"].get("variant")))): Digest.parse(e["digest"])
            for e in index["manifests"]}


def test_signed_push_of_an_index(registry, tmp_path: Path, keys: Path,  # noqa: F811
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUSH_KEY", keys.with_suffix(".key").read_text())
    monkeypatch.setenv("PUSH_PW", PASSWORD)
    ws = _index_workspace(tmp_path, registry.host, "sign/index")
    assert ws.run("build", "//app:index").code == 0
    unsigned = ws.out("app/index.digest").read_text().strip()
    platforms = _platform_digests(ws)
    assert sorted(platforms) == sorted(PLATFORMS)

    r = ws.run("run", "//app:push")
    assert r.code == 0, r.err
    assert r.out.strip().splitlines()[-1] == unsigned  # signing left the index digest alone
    ref = f"{registry.host}/sign/index:v1"
    client = _client()
    assert str(client.get_manifest(parse_reference(ref)).digest) == unsigned

    # Found through the referrers tag schema: the index has its bundle and its provenance ...
    index_blobs = _referrer_blobs(ref, Digest.parse(unsigned))
    assert sorted((t, len(b)) for t, b in index_blobs.items()) == [(BUNDLE, 1), (DSSE, 1)]
    provenance = _by_type(index_blobs)[SLSA]
    assert provenance["subject"][0]["digest"] == {"sha256": unsigned.split(":")[1]}
    # ... and each platform image its signature, bundle, SBOM and provenance.
    image = parse_reference(ref)
    for platform, digest in platforms.items():
        assert client.find_manifest(image.with_tag(f"sha256-{digest.hex}.sig")) is not None
        blobs = _referrer_blobs(ref, digest)
        assert sorted((t, len(b)) for t, b in blobs.items()) == [(BUNDLE, 1), (DSSE, 2)], platform
        statements = _by_type(blobs)
        for statement in statements.values():
            assert statement["subject"][0]["digest"] == {"sha256": digest.hex}
        assert statements[SLSA]["predicate"] == provenance["predicate"]
        # Byte for byte what `pyimg sbom --platform` writes (the envelope holds it as canonical
        # JSON, and so does pyimg sbom).
        sbom = ws.run("sbom", *ws.flags(), "//app:index", "--platform", platform)
        assert sbom.code == 0, sbom.err
        [payload] = [base64.b64decode(json.loads(e)["payload"]) for e in blobs[DSSE]
                     if _statement(e)["predicateType"] == SPDX]
        assert statements[SPDX]["predicate"] == json.loads(sbom.out)
        assert sbom.out.strip().encode() in payload

    public = str(keys.with_suffix(".pub"))
    r = pyimg("verify", ref, "--key", public, "--require", "sbom,provenance")
    assert r.code == 0, r.err
    assert [line.split("@")[0] for line in r.out.splitlines()] == [
        f"verified {registry.host}/sign/index",
        *(f"verified {registry.host}/sign/index" for _ in PLATFORMS)]
    for platform, digest in platforms.items():
        assert f"@{digest} ({platform}): 1 signature(s), 1 bundle(s)" in r.out, r.out
        alone = pyimg("verify", f"{registry.host}/sign/index@{digest}", "--key", public,
                      "--require", "sbom,provenance")
        assert alone.code == 0 and str(digest) in alone.out, alone.err

    # An independent verifier (securesystemslib, installed by tools/setup) accepts a platform
    # image's attestations, and refuses one tampered with.
    from securesystemslib.exceptions import VerificationError

    arm64 = platforms["linux/arm64/v8"]
    arm = _referrer_blobs(ref, arm64)[DSSE]
    for envelope in arm:
        statement = _securesystemslib_verify(envelope, keys.with_suffix(".pub").read_bytes())
        assert statement["subject"][0]["digest"] == {"sha256": arm64.hex}
        with pytest.raises(VerificationError):
            _securesystemslib_verify(_tampered(envelope), keys.with_suffix(".pub").read_bytes())

    # The npm Sigstore verifier accepts a platform image's bundle, and refuses it tampered with.
    if (SIGSTORE_JS / "@sigstore" / "verify").is_dir() and shutil.which("node"):
        [bundle] = _referrer_blobs(ref, arm64)[BUNDLE]
        envelope = json.dumps(json.loads(bundle)["dsseEnvelope"]).encode()
        (tmp_path / "bundle.json").write_bytes(bundle)
        (tmp_path / "tampered.json").write_text(json.dumps(
            {**json.loads(bundle), "dsseEnvelope": json.loads(_tampered(envelope))}))
        env = {**os.environ, "NODE_PATH": str(SIGSTORE_JS)}
        for name, ok in (("bundle.json", True), ("tampered.json", False)):
            node = subprocess.run(["node", str(VERIFY_JS), str(tmp_path / name), public],
                                  capture_output=True, text=True, env=env, timeout=60)
            assert (node.returncode == 0) == ok, node.stdout + node.stderr
            assert ok == (node.stdout.strip() == "verified"), node.stdout

    # A missing attestation: the amd64 image's SBOM dropped from its referrers tag.
    amd64 = platforms["linux/amd64"]
    tag = image.with_tag(referrers_tag(amd64))
    listing = json.loads(client.get_manifest(tag).data)
    kept = [d for d in listing["manifests"]
            if d.get("annotations", {}).get("dev.sigstore.bundle.predicateType") != SPDX]
    assert len(kept) == len(listing["manifests"]) - 1
    client.put_manifest(tag, json.dumps({**listing, "manifests": kept}).encode(),
                        listing["mediaType"], tag.identifier)
    r = pyimg("verify", ref, "--key", public, "--require", "sbom,provenance")
    _one_error(r, f"@{amd64} (the linux/amd64 image of the index {unsigned})", "no sbom attestation")
    assert pyimg("verify", ref, "--key", public, "--require", "provenance").code == 0

    # A tampered attestation about the arm64 image fails verify, naming that image.
    desc = client.get_manifest(image.with_digest(arm64)).descriptor()
    attach_artifacts(client, image, desc, [Artifact(DSSE, DSSE, _tampered(arm[0]))])
    r = pyimg("verify", ref, "--key", public)
    _one_error(r, f"@{arm64} (the linux/arm64/v8 image of the index {unsigned})")


def test_signed_cli_push_of_an_index_counts_requests(registry, tmp_path: Path, keys: Path,  # noqa: F811
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """`pyimg push --sign-key` of an index: the signatures and attachments of the index and its
    images add requests (counted by a proxy), at most one round-trip per artifact."""
    from regtestlib import FaultProxy

    monkeypatch.setenv("PUSH_KEY", keys.with_suffix(".key").read_text())
    monkeypatch.setenv("PUSH_PW", PASSWORD)
    ws = _index_workspace(tmp_path, registry.host, "sign/unused")
    assert ws.run("build", "//app:index").code == 0
    proxy = FaultProxy(registry.host, 0.2)
    try:
        before = len(proxy.requests)
        r = ws.run("push", *ws.flags(), "//app:index", "--repository", f"{proxy.host}/count/plain")
        assert r.code == 0, r.err
        plain, plain_rounds = proxy.requests[before:], proxy.round_trips(before)
        before = len(proxy.requests)
        r = ws.run("push", *ws.flags(), "//app:index", "--repository", f"{proxy.host}/count/signed",
                   "--sign-key", "env://PUSH_KEY", "--key-password-env", "PUSH_PW")
        assert r.code == 0, r.err
        signed, signed_rounds = proxy.requests[before:], proxy.round_trips(before)
    finally:
        proxy.close()
    # Three signed subjects (the index, two images). Each .sig tag: 8 requests (as for one
    # image, test_signing.py). The referrers of the index: the empty config, its bundle and
    # provenance (POST and PUT each), 2 manifest PUTs, the referrers tag's GET, PUT and GET: 11;
    # of each image, with its SBOM as well: 14. The three batches go out together, so a later
    # one may find the empty config already there (201 to its POST, no PUT): 61 to 63.
    added = len(signed) - len(plain)
    assert 61 <= added <= 63, (plain, signed)
    # Eleven artifacts (three .sig tags, three bundles, two SBOMs, three provenances): at most
    # one round-trip each, in fact the rounds of one image's signature, overlapped.
    assert signed_rounds - plain_rounds <= 11, (plain_rounds, signed_rounds)
