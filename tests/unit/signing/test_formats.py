"""signing/formats.py: the documents cosign, DSSE and in-toto define, byte for byte."""

from __future__ import annotations

import base64
import json

import pytest
from pyimg.core.digest import Digest
from pyimg.errors import VerificationError
from pyimg.signing.formats import (
    bundle_envelope,
    dsse_envelope,
    in_toto_statement,
    open_envelope,
    pae,
    parse_simple_signing,
    sigstore_bundle,
    simple_signing_payload,
)
from pyimg.signing.keys import generate_key

DIGEST = Digest("sha256", "ab" * 32)


def test_pae_is_the_dsse_spec_encoding() -> None:
    # The DSSE protocol's example: "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body.
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_simple_signing_payload_is_cosigns() -> None:
    payload = simple_signing_payload("reg.example/team/app", DIGEST)
    assert payload == (
        b'{"critical":{"identity":{"docker-reference":"reg.example/team/app"},'
        b'"image":{"docker-manifest-digest":"sha256:' + b"ab" * 32 + b'"},'
        b'"type":"cosign container image signature"},"optional":null}'
    )
    claim = parse_simple_signing(payload, "p")
    assert (claim.docker_reference, claim.digest) == ("reg.example/team/app", DIGEST)
    with pytest.raises(VerificationError, match="not a simple-signing payload"):
        parse_simple_signing(b'{"critical": {}}', "p")


def test_envelope_verifies_and_refuses_tampering_and_other_keys() -> None:
    key, other = generate_key(), generate_key()
    statement = in_toto_statement("app", DIGEST, "https://spdx.dev/Document", {"a": 1})
    envelope = dsse_envelope(statement, key)
    opened = open_envelope(envelope, key.public, "e")
    assert opened.predicate_type == "https://spdx.dev/Document"
    assert opened.subject_digests == (str(DIGEST),)
    assert dsse_envelope(statement, key) == envelope  # deterministic
    with pytest.raises(VerificationError, match="no signature of the envelope verifies"):
        open_envelope(envelope, other.public, "e")
    doc = json.loads(envelope)
    doc["payload"] = base64.b64encode(statement.replace(b'"a":1', b'"a":2')).decode()
    with pytest.raises(VerificationError, match="no signature"):
        open_envelope(json.dumps(doc).encode(), key.public, "e")
    bundle = sigstore_bundle(envelope, key)
    assert json.loads(bundle)["verificationMaterial"]["publicKey"]["hint"] == key.public.hint
    assert bundle_envelope(bundle, "b") == envelope
    with pytest.raises(VerificationError, match="not a DSSE envelope"):
        open_envelope(b"[]", key.public, "e")
