"""pyimg sign / attest / verify against a real docker-registry (no referrers API: the referrers
tag schema is what carries the attestations), checked by independent verifiers: the npm
@sigstore/verify for the Sigstore bundle, securesystemslib for the DSSE envelopes."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pyimg.core.digest import Digest
from pyimg.core.secrets import leak_patterns
from pyimg.registry.client import RegistryClient
from pyimg.registry.reference import parse_reference
from regtestlib import FaultProxy, make_image
from workspace_helpers import Workspace

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[3]
SIGSTORE_JS = REPO_ROOT / ".venv" / "sigstore-js" / "node_modules"
VERIFY_JS = Path(__file__).with_name("sigstore_verify.js")
DSSE = "application/vnd.dsse.envelope.v1+json"
BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PASSWORD = "correct horse battery staple"


@dataclass
class Result:
    code: int
    out: str
    err: str


def pyimg(*args: str) -> Result:
    from pyimg.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return Result(code, out.getvalue(), err.getvalue())


_open_clients: list[RegistryClient] = []


def _client() -> RegistryClient:
    """A registry client closed when the test ends (an open socket warns, and warnings fail)."""
    client = RegistryClient()
    _open_clients.append(client)
    return client


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    while _open_clients:
        _open_clients.pop().close()


def _one_error(r: Result, *fragments: str) -> None:
    """A user error: non-zero, one ERROR line naming what failed, no traceback."""
    assert r.code != 0, r
    lines = [line for line in r.err.splitlines() if line.startswith("ERROR")]
    assert len(lines) == 1, r.err  # after a build's progress lines, if any
    assert "Traceback" not in r.err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def _push(registry, tmp_path: Path, repo: str, content: bytes = b"hello\n") -> tuple[str, Digest]:
    layout = tmp_path / f"layout-{repo.replace('/', '-')}"
    make_image(layout, tag="v1", layers=[{"hello.txt": content}])
    ref = f"{registry.host}/{repo}:v1"
    return ref, _client().push_layout(layout, ref)


@pytest.fixture
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An encrypted key pair made by `pyimg keygen`: PREFIX.key, PREFIX.pub; the password in
    the environment variable PYIMG_TEST_PW."""
    monkeypatch.setenv("PYIMG_TEST_PW", PASSWORD)
    prefix = tmp_path / "cosign"
    r = pyimg("keygen", str(prefix), "--key-password-env", "PYIMG_TEST_PW")
    assert r.code == 0, r.err
    assert b"ENCRYPTED PRIVATE KEY" in prefix.with_suffix(".key").read_bytes()
    assert prefix.with_suffix(".key").stat().st_mode & 0o077 == 0
    return prefix


def _sign_args(keys: Path) -> list[str]:
    return ["--key", str(keys.with_suffix(".key")), "--key-password-env", "PYIMG_TEST_PW"]


def _statement(digest: Digest, predicate_type: str, predicate: object) -> bytes:
    return json.dumps({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "app", "digest": {"sha256": digest.hex}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    }).encode()


def _referrer_blobs(ref_text: str, digest: Digest) -> dict[str, list[bytes]]:
    """artifactType -> the blobs of each referrer, read from the referrers tag."""
    client = _client()
    ref = parse_reference(ref_text)
    tag = client.get_manifest(ref.with_tag(f"sha256-{digest.hex}"))
    found: dict[str, list[bytes]] = {}
    for desc in json.loads(tag.data)["manifests"]:
        manifest = json.loads(client.get_manifest(ref.with_digest(Digest.parse(desc["digest"]))).data)
        assert manifest["subject"]["digest"] == str(digest)
        assert manifest["artifactType"] == desc["artifactType"]
        for layer in manifest["layers"]:
            blob = client.read_small_blob(ref, Digest.parse(layer["digest"]))
            found.setdefault(desc["artifactType"], []).append(blob)
    return found


def _attest_both(ref: str, digest: Digest, keys: Path, tmp_path: Path) -> None:
    """An SBOM predicate and a whole provenance statement, attached in one command."""
    sbom = tmp_path / "sbom.spdx.json"
    sbom.write_text(json.dumps({"spdxVersion": "SPDX-2.3", "name": "app"}))
    provenance = tmp_path / "provenance.json"
    provenance.write_bytes(_statement(digest, "https://slsa.dev/provenance/v1", {"buildDefinition": {}}))
    r = pyimg("attest", ref, *_sign_args(keys), "--predicate", str(sbom), "--type", "spdx",
              "--predicate", str(provenance), "--type", "slsaprovenance")
    assert r.code == 0, r.err


def test_sign_attest_verify_through_the_referrers_tag(registry, tmp_path: Path, keys: Path) -> None:
    ref, digest = _push(registry, tmp_path, "sign/app")
    # This registry has no referrers API: what follows must go through the fallback tag.
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(f"http://{registry.host}/v2/sign/app/referrers/{digest}")
    assert answer.value.code == 404
    answer.value.close()
    for _ in range(2):  # signing twice adds nothing: the signature is deterministic
        r = pyimg("sign", ref, *_sign_args(keys))
        assert r.code == 0 and str(digest) in r.out, r.err
    _attest_both(ref, digest, keys, tmp_path)
    r = pyimg("verify", ref, "--key", str(keys.with_suffix(".pub")), "--require", "sbom,provenance")
    assert r.code == 0, r.err
    assert "1 signature(s), 1 bundle(s)" in r.out
    assert "https://slsa.dev/provenance/v1" in r.out and "https://spdx.dev/Document" in r.out

    client = _client()
    image = parse_reference(ref)
    assert client.get_manifest(image).digest == digest  # the image itself never changed
    signatures = json.loads(client.get_manifest(image.with_tag(f"sha256-{digest.hex}.sig")).data)
    [layer] = signatures["layers"]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    payload = json.loads(client.read_small_blob(image, Digest.parse(layer["digest"])))
    assert payload["critical"]["image"]["docker-manifest-digest"] == str(digest)
    assert payload["critical"]["type"] == "cosign container image signature"
    blobs = _referrer_blobs(ref, digest)
    assert sorted((t, len(b)) for t, b in blobs.items()) == [(BUNDLE, 1), (DSSE, 2)]


def _securesystemslib_verify(envelope: bytes, public_pem: bytes) -> dict:
    """The in-toto statement of a DSSE envelope, verified by securesystemslib (keyid: sha256 of
    the key's DER, as pyimg's envelopes name it)."""
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import SSlibKey

    public = serialization.load_pem_public_key(public_pem)
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key = SSlibKey.from_crypto(public, keyid=hashlib.sha256(der).hexdigest(),
                               scheme="ecdsa-sha2-nistp256")
    parsed = Envelope.from_dict(json.loads(envelope))
    parsed.verify([key], 1)
    assert parsed.payload_type == "application/vnd.in-toto+json"
    return json.loads(parsed.pae().split(b" ", 4)[4])


def _tampered(envelope: bytes) -> bytes:
    doc = json.loads(envelope)
    statement = json.loads(base64.b64decode(doc["payload"]))
    statement["predicate"] = {"tampered": True}
    doc["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    return json.dumps(doc).encode()


def test_independent_verifiers_accept_pyimg_and_refuse_tampering(
    registry, tmp_path: Path, keys: Path
) -> None:
    pytest.importorskip("securesystemslib")
    ref, digest = _push(registry, tmp_path, "sign/independent")
    assert pyimg("sign", ref, *_sign_args(keys)).code == 0
    _attest_both(ref, digest, keys, tmp_path)
    blobs = _referrer_blobs(ref, digest)
    public_pem = keys.with_suffix(".pub").read_bytes()
    other = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    from securesystemslib.exceptions import VerificationError

    envelopes = [*blobs[DSSE], *(json.dumps(json.loads(b)["dsseEnvelope"]).encode() for b in blobs[BUNDLE])]
    types = set()
    for envelope in envelopes:
        statement = _securesystemslib_verify(envelope, public_pem)
        assert statement["subject"][0]["digest"] == {"sha256": digest.hex}
        types.add(statement["predicateType"])
        with pytest.raises(VerificationError):
            _securesystemslib_verify(_tampered(envelope), public_pem)
        # Another key under the same keyid: the signature itself must fail, not the lookup.
        with pytest.raises(VerificationError):
            _securesystemslib_verify_as(envelope, other, public_pem)
    assert types == {
        "https://spdx.dev/Document",
        "https://slsa.dev/provenance/v1",
        "https://sigstore.dev/cosign/sign/v1",
    }

    if not (SIGSTORE_JS / "@sigstore" / "verify").is_dir() or shutil.which("node") is None:
        pytest.skip("the npm Sigstore verifier is not installed (tools/setup --system)")
    [bundle] = blobs[BUNDLE]
    (tmp_path / "bundle.json").write_bytes(bundle)
    (tmp_path / "tampered.json").write_bytes(json.dumps({
        **json.loads(bundle), "dsseEnvelope": json.loads(_tampered(json.dumps(json.loads(bundle)["dsseEnvelope"]).encode()))
    }).encode())
    (tmp_path / "other.pub").write_bytes(other)
    env = {**os.environ, "NODE_PATH": str(SIGSTORE_JS)}

    def node(bundle_file: str, key_file: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["node", str(VERIFY_JS), str(tmp_path / bundle_file), str(key_file)],
                              capture_output=True, text=True, env=env, timeout=60)

    ok = node("bundle.json", keys.with_suffix(".pub"))
    assert ok.returncode == 0 and ok.stdout.strip() == "verified", ok.stdout + ok.stderr
    tampered = node("tampered.json", keys.with_suffix(".pub"))
    assert tampered.returncode == 1 and "SIGNATURE_ERROR" in tampered.stdout, tampered.stdout
    wrong_key = node("bundle.json", tmp_path / "other.pub")
    assert wrong_key.returncode == 1 and "SIGNATURE_ERROR" in wrong_key.stdout, wrong_key.stdout

    # The cosign `.sig` signature too: its payload and signature annotation, put in a
    # message-signature bundle by this test, verify over the payload bytes.
    client = _client()
    image = parse_reference(ref)
    [layer] = json.loads(client.get_manifest(image.with_tag(f"sha256-{digest.hex}.sig")).data)["layers"]
    payload = client.read_small_blob(image, Digest.parse(layer["digest"]))
    (tmp_path / "payload.json").write_bytes(payload)
    (tmp_path / "other-payload.json").write_bytes(payload.replace(b"sha256:", b"sha256:0", 1))
    (tmp_path / "sig.json").write_text(json.dumps({
        "mediaType": BUNDLE,
        "verificationMaterial": {"publicKey": {"hint": "cosign.pub"}, "tlogEntries": []},
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256",
                              "digest": base64.b64encode(hashlib.sha256(payload).digest()).decode()},
            "signature": layer["annotations"]["dev.cosignproject.cosign/signature"],
        },
    }))

    def node_artifact(artifact: str, key_file: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["node", str(VERIFY_JS), str(tmp_path / "sig.json"), str(key_file),
                               str(tmp_path / artifact)],
                              capture_output=True, text=True, env=env, timeout=60)

    ok = node_artifact("payload.json", keys.with_suffix(".pub"))
    assert ok.returncode == 0 and ok.stdout.strip() == "verified", ok.stdout + ok.stderr
    assert node_artifact("other-payload.json", keys.with_suffix(".pub")).returncode == 1
    assert node_artifact("payload.json", tmp_path / "other.pub").returncode == 1


def _securesystemslib_verify_as(envelope: bytes, public_pem: bytes, keyid_pem: bytes) -> dict:
    """Verify with `public_pem` presented under the keyid of `keyid_pem`."""
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import SSlibKey

    named = serialization.load_pem_public_key(keyid_pem).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key = SSlibKey.from_crypto(serialization.load_pem_public_key(public_pem),
                               keyid=hashlib.sha256(named).hexdigest(), scheme="ecdsa-sha2-nistp256")
    parsed = Envelope.from_dict(json.loads(envelope))
    parsed.verify([key], 1)
    return {}


def test_bad_input_each_one_clear_message(registry, tmp_path: Path, keys: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    ref, digest = _push(registry, tmp_path, "sign/bad")
    other_ref, other_digest = _push(registry, tmp_path, "sign/bad-other", b"another image\n")
    key = str(keys.with_suffix(".key"))
    public = str(keys.with_suffix(".pub"))

    monkeypatch.setenv("WRONG_PW", "not the password")
    _one_error(pyimg("sign", ref, "--key", key, "--key-password-env", "WRONG_PW"),
               key, "wrong password")
    _one_error(pyimg("sign", ref, "--key", key), key, "encrypted", "password")
    rsa_key = tmp_path / "rsa.key"
    rsa_key.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    _one_error(pyimg("sign", ref, "--key", str(rsa_key)), "RSA", "ECDSA P-256")
    _one_error(pyimg("sign", ref, "--key", public), "public key")
    _one_error(pyimg("verify", ref, "--key", key), "private key")

    # Unsigned, then signed by another key, then a signature over another image's digest.
    _one_error(pyimg("verify", ref, "--key", public), str(digest), "not signed")
    other_keys = tmp_path / "other"
    assert pyimg("keygen", str(other_keys)).code == 0
    assert pyimg("sign", ref, "--key", str(other_keys.with_suffix(".key"))).code == 0
    _one_error(pyimg("verify", ref, "--key", public), "no signature", "verifies with the key")
    assert pyimg("sign", other_ref, *_sign_args(keys)).code == 0
    _copy_signatures(other_ref, other_digest, ref, digest)
    _one_error(pyimg("verify", ref, "--key", public), "over another digest", str(other_digest))
    # The same image in another repository, with the first one's signatures copied over.
    copy_ref, copy_digest = _push(registry, tmp_path, "sign/bad-copy", b"another image\n")
    assert copy_digest == other_digest
    _copy_signatures(other_ref, other_digest, copy_ref, copy_digest)
    _one_error(pyimg("verify", copy_ref, "--key", public), "names another repository",
               "sign/bad-other")
    _one_error(pyimg("keygen", str(tmp_path / "k3"), "--key-password-file", str(tmp_path / "no")),
               "cannot read the password file")

    # Signed, but without the attestations --require asks for.
    assert pyimg("verify", other_ref, "--key", public).code == 0
    _one_error(pyimg("verify", other_ref, "--key", public, "--require", "sbom"),
               "no sbom attestation")
    _one_error(pyimg("verify", other_ref, "--key", public, "--require", "sbom,licence"),
               "'licence'")
    # An attestation whose statement is about another image is refused before anything is pushed.
    statement = tmp_path / "elsewhere.json"
    statement.write_bytes(_statement(digest, "https://slsa.dev/provenance/v1", {}))
    _one_error(pyimg("attest", other_ref, *_sign_args(keys), "--predicate", str(statement),
                     "--type", "slsaprovenance"), str(digest), "not")
    _one_error(pyimg("attest", other_ref, *_sign_args(keys), "--predicate", str(statement),
                     "--predicate", str(statement), "--predicate", str(statement),
                     "--type", "spdx", "--type", "slsaprovenance"), "one --type")


def _copy_signatures(src: str, src_digest: Digest, dest: str, dest_digest: Digest) -> None:
    """Put the `.sig` manifest of `src` (and its blobs) where `dest`'s signatures would be."""
    client = _client()
    source, target = parse_reference(src), parse_reference(dest)
    moved = client.get_manifest(source.with_tag(f"sha256-{src_digest.hex}.sig"))
    for blob in json.loads(moved.data)["layers"] + [json.loads(moved.data)["config"]]:
        data = client.read_small_blob(source, Digest.parse(blob["digest"]))
        client.push_blob(target, Digest.parse(blob["digest"]), len(data), lambda d=data: io.BytesIO(d))
    client.put_manifest(target.with_tag(f"sha256-{dest_digest.hex}.sig"), moved.data,
                        moved.media_type, f"sha256-{dest_digest.hex}.sig")


def test_registry_refusing_an_attestation_is_one_error_and_the_image_is_intact(
    registry, tmp_path: Path, keys: Path
) -> None:
    _, digest = _push(registry, tmp_path, "sign/refused")
    proxy = FaultProxy(registry.host)
    try:
        ref = f"{proxy.host}/sign/refused:v1"
        assert pyimg("sign", ref, *_sign_args(keys)).code == 0
        sbom = tmp_path / "sbom.json"
        sbom.write_text("{}")
        proxy.faults.append(("PUT", "/manifests/sha256:", "400"))
        r = pyimg("attest", ref, *_sign_args(keys), "--predicate", str(sbom))
        _one_error(r, "refused the application/vnd.dsse.envelope.v1+json artifact",
                   "the image itself is unchanged", "HTTP 400")
        assert _client().get_manifest(parse_reference(ref)).digest == digest
        assert pyimg("verify", ref, "--key", str(keys.with_suffix(".pub"))).code == 0
        _one_error(pyimg("verify", ref, "--key", str(keys.with_suffix(".pub")), "--require", "sbom"),
                   "no sbom attestation")
    finally:
        proxy.close()


def test_keys_and_passwords_never_leak(registry, tmp_path: Path, keys: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    ref, _ = _push(registry, tmp_path, "sign/leak")
    pem = keys.with_suffix(".key").read_bytes()
    secret_key = serialization.load_pem_private_key(pem, PASSWORD.encode())
    scalar = secret_key.private_numbers().private_value.to_bytes(32, "big")
    plain_der = secret_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # The key through an environment variable, the password through a file.
    monkeypatch.setenv("PYIMG_TEST_KEY", pem.decode())
    password_file = tmp_path / "pw"
    password_file.write_text(PASSWORD + "\n")
    runs = [
        pyimg("sign", ref, "--key", "env://PYIMG_TEST_KEY", "--key-password-file", str(password_file)),
        pyimg("attest", ref, "--key", "env://PYIMG_TEST_KEY", "--key-password-file",
              str(password_file), "--predicate", str(password_file.with_name("missing.json"))),
        pyimg("sign", ref, "--key", "env://PYIMG_TEST_KEY", "--key-password-env", "NO_SUCH_VAR"),
        pyimg("verify", ref, "--key", "env://PYIMG_TEST_KEY"),
    ]
    assert runs[0].code == 0 and all(r.code != 0 for r in runs[1:]), runs
    needles = [*leak_patterns(PASSWORD.encode()), *leak_patterns(scalar), *leak_patterns(plain_der),
               pem.split(b"\n")[1]]
    text = "".join(r.out + r.err for r in runs).encode()
    assert [n for n in needles if n in text] == []
    stored = [p for p in (registry.root / "data").rglob("*") if p.is_file()]
    assert stored
    assert [p for p in stored for n in needles if n in p.read_bytes()] == []


def test_cosign_encrypted_key_format(registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("nacl")
    ref, digest = _push(registry, tmp_path, "sign/cosign-key")
    monkeypatch.setenv("COSIGN_PASSWORD", PASSWORD)
    prefix = tmp_path / "cosign"
    assert pyimg("keygen", str(prefix), "--cosign-format", "--key-password-env", "COSIGN_PASSWORD").code == 0
    assert b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----" in prefix.with_suffix(".key").read_bytes()
    monkeypatch.setenv("WRONG", "nope")
    _one_error(pyimg("sign", ref, "--key", str(prefix.with_suffix(".key")), "--key-password-env", "WRONG"),
               "wrong password", "cosign")
    r = pyimg("sign", ref, "--key", str(prefix.with_suffix(".key")), "--key-password-env", "COSIGN_PASSWORD")
    assert r.code == 0, r.err
    r = pyimg("verify", ref, "--key", str(prefix.with_suffix(".pub")))
    assert r.code == 0 and str(digest) in r.out, r.err


def _push_workspace(tmp_path: Path, host: str, repo: str, sign: bool) -> Workspace:
    ws = Workspace(tmp_path / f"ws-{repo.replace('/', '-')}", tmp_path / "cache")
    ws.write("app/hello.txt", "hello\n")
    signing = 'sign_key = "env://PUSH_KEY", sign_key_password_env = "PUSH_PW",' if sign else ""
    ws.write(
        "app/BUILD.pyimg",
        f"""
        pkg_tar(name = "layer", srcs = ["hello.txt"], package_dir = "/app")
        oci_image(name = "image", tars = [":layer"], entrypoint = ["/bin/true"])
        oci_push(name = "push", image = ":image", repository = "{host}/{repo}",
                 remote_tags = ["v1"], {signing})
        """,
    )
    return ws


def test_oci_push_signs_what_it_pushed(registry, tmp_path: Path, keys: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUSH_KEY", keys.with_suffix(".key").read_text())
    monkeypatch.setenv("PUSH_PW", "wrong")
    ws = _push_workspace(tmp_path, registry.host, "sign/pushed", sign=True)
    r = ws.run("run", "//app:push")
    _one_error(r, "env://PUSH_KEY", "wrong password")
    assert _client().find_manifest(parse_reference(f"{registry.host}/sign/pushed:v1")) is None
    monkeypatch.setenv("PUSH_PW", PASSWORD)
    r = ws.run("run", "//app:push")
    assert r.code == 0, r.err
    digest = r.out.strip().splitlines()[-1]
    assert digest == ws.out("app/image.digest").read_text().strip()  # the built digest, unchanged
    r = pyimg("verify", f"{registry.host}/sign/pushed:v1", "--key", str(keys.with_suffix(".pub")),
              "--require", "sbom,provenance")
    assert r.code == 0 and digest in r.out, r.err
    # Nothing of the key reached the build's caches or outputs.
    pem_line = keys.with_suffix(".key").read_bytes().split(b"\n")[1]
    needles = [pem_line, *leak_patterns(PASSWORD.encode())]
    files = [p for root in (ws.cache, ws.root / "pyimg-out") for p in root.rglob("*") if p.is_file()]
    assert [p for p in files for n in needles if n in p.read_bytes()] == []


def test_requests_added_by_signing_a_push(registry, tmp_path: Path) -> None:
    """What docs/benchmarks.md reports (tools/bench/signing_requests.py): the registry requests
    a signature adds to an oci_push, counted by a proxy."""
    sys.path.insert(0, str(REPO_ROOT / "tools" / "bench"))
    from signing_requests import signing_requests

    counts = signing_requests(registry.host, tmp_path, latency=0.3)
    # Four artifacts. The .sig tag (8): GET (none yet), its config and payload (POST, PUT each;
    # each POST asks to mount the blob from the repository, which skips a present one), a GET
    # again with the PUTs (the manifest is merged from a read just before its write), the
    # manifest PUT and the GET that checks it. The referrers (14): the empty config and the
    # three envelopes (bundle, SBOM, provenance), POST and PUT each, three manifest PUTs; the
    # referrers tag's GET (with those PUTs), PUT and checking GET, shared by the batch. The
    # image push itself is the same 9 requests as without signing.
    assert counts["push"] == 9 and counts["added"] == 22, counts
    assert counts["added_by_method"] == {"GET": 5, "POST": 6, "PUT": 11}, counts
    # Sent in rounds (docs/benchmarks.md): POSTs with the .sig tag's GET, overlapping the image's
    # push (they need only its digest); blob PUTs with the .sig tag's GET again; manifest PUTs
    # (and the .sig tag's) with the referrers tag's GET; the referrers tag's PUT; its check. Requests of one round overlap behind the proxy's latency;
    # sequentially the signature took 20 more rounds.
    # A scheduling delay longer than the latency (a loaded machine) can only make requests of
    # one round look sequential, never the reverse: the fewest rounds of a few pushes is the
    # measure of the code.
    # (Each measure pushes to fresh repositories, so each is a first signature.)
    rounds = [counts["added_round_trips"]]
    while min(rounds) > 4 and len(rounds) < 3:
        again = tmp_path / f"again{len(rounds)}"
        again.mkdir()
        more = signing_requests(registry.host, again, latency=0.3, namespace=f"again{len(rounds)}")
        assert more["added"] == 22, more
        rounds.append(more["added_round_trips"])
    assert min(rounds) <= 4, (rounds, counts)


def test_concurrent_signers_both_survive(registry, tmp_path: Path) -> None:
    """Two signers with their own keys sign the same image at the same moment, each with an
    attestation: both signatures stay in the .sig tag and every referrer in the referrers tag
    (docker-registry ignores If-Match: the check after each write merges what was lost)."""
    import threading

    from pyimg.signing.attach import Predicate, sign_image, signature_tag, verify_image
    from pyimg.signing.keys import generate_key

    ref_text, digest = _push(registry, tmp_path, "sign/race")
    ref = parse_reference(ref_text)
    keys = [generate_key(), generate_key()]
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def signer(n: int) -> None:
        client = RegistryClient()
        try:
            start.wait()
            sign_image(client, ref, keys[n], predicates=[
                Predicate(json.dumps({"spdxVersion": "SPDX-2.3", "name": f"signer {n}"}).encode(),
                          "spdx", f"sbom{n}.json")])
        except BaseException as e:  # noqa: BLE001 - reported by the test's thread
            errors.append(e)
        finally:
            client.close()

    threads = [threading.Thread(target=signer, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    client = _client()
    sig = json.loads(client.get_manifest(ref.with_tag(signature_tag(digest))).data)
    assert len(sig["layers"]) == 2
    blobs = _referrer_blobs(ref_text, digest)
    assert len(blobs["application/vnd.dev.sigstore.bundle.v0.3+json"]) == 2
    assert len(blobs["application/vnd.dsse.envelope.v1+json"]) == 2
    for key in keys:
        found = verify_image(client, ref, key.public, ["sbom"])
        assert (found.signatures, found.bundles) == (1, 1)


def test_signed_cli_push_attaches_sbom_and_provenance(registry, tmp_path: Path, keys: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`pyimg push --sign-key`: one push signs and attaches the SBOM and the provenance, so
    that verify --require passes at once; the image digest is an unsigned build's."""
    monkeypatch.setenv("PUSH_KEY", keys.with_suffix(".key").read_text())
    monkeypatch.setenv("PUSH_PW", PASSWORD)
    ws = _push_workspace(tmp_path, registry.host, "sign/cli", sign=False)
    assert ws.run("build", "//app:image").code == 0
    unsigned = ws.out("app/image.digest").read_text().strip()
    ref = f"{registry.host}/sign/cli:v2"
    r = ws.run("push", "//app:image", "--repository", ref, "--sign-key", "env://PUSH_KEY",
               "--key-password-env", "PUSH_PW")
    assert r.code == 0, r.err
    assert r.out.strip().splitlines()[-1] == unsigned
    r = pyimg("verify", ref, "--key", str(keys.with_suffix(".pub")), "--require", "sbom,provenance")
    assert r.code == 0 and unsigned in r.out, (r.out, r.err)
