"""The signed documents, as cosign, Sigstore, in-toto and containers/image define them.

- simple signing payloads (cosign's "cosign container image signature", containers/image's
  "atomic container signature"): which image digest a signature vouches for, under which name;
- DSSE envelopes over in-toto Statement v1 (attestations);
- Sigstore bundles v0.3 with a public-key hint around a DSSE envelope (no Rekor entry, no
  certificate: a key pair, as `cosign sign --key` without the transparency log).

Pure functions over bytes; the registry side is in attach.py.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from pyimg.core import json_input
from pyimg.core.digest import Digest, canonical_json
from pyimg.errors import VerificationError

from .keys import SigningKey, VerifyingKey

__all__ = [
    "ATOMIC_SIGNATURE",
    "BUNDLE_MEDIA_TYPE",
    "COSIGN_SIGNATURE",
    "DSSE_MEDIA_TYPE",
    "IN_TOTO_PAYLOAD_TYPE",
    "STATEMENT_TYPE",
    "Envelope",
    "SimpleSigning",
    "dsse_envelope",
    "in_toto_statement",
    "bundle_envelope",
    "open_envelope",
    "pae",
    "parse_simple_signing",
    "sigstore_bundle",
    "simple_signing_payload",
]

COSIGN_SIGNATURE = "cosign container image signature"
ATOMIC_SIGNATURE = "atomic container signature"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"


@dataclass(frozen=True)
class SimpleSigning:
    """What a simple-signing payload says: the image's name, its manifest digest, the kind."""

    docker_reference: str
    digest: Digest
    type: str


def simple_signing_payload(
    docker_reference: str, digest: Digest, kind: str = COSIGN_SIGNATURE, creator: str | None = None
) -> bytes:
    """The payload a signature signs; canonical JSON, so the same image gives the same bytes."""
    return canonical_json({
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": str(digest)},
            "type": kind,
        },
        "optional": {"creator": creator} if creator else None,
    })


def parse_simple_signing(data: bytes, where: str) -> SimpleSigning:
    try:
        critical = _object(json_input.loads(data))["critical"]
        return SimpleSigning(
            str(critical["identity"]["docker-reference"]),
            Digest.parse(str(critical["image"]["docker-manifest-digest"])),
            str(critical["type"]),
        )
    except (ValueError, KeyError, TypeError) as e:
        raise VerificationError(f"{where}: not a simple-signing payload ({e})") from None


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what an envelope's signature really signs."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def in_toto_statement(
    subject_name: str, digest: Digest, predicate_type: str, predicate: object
) -> bytes:
    """An in-toto Statement v1 about one image (subject: its name and manifest digest)."""
    return canonical_json({
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject_name, "digest": {digest.algorithm: digest.hex}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    })


def dsse_envelope(payload: bytes, key: SigningKey, payload_type: str = IN_TOTO_PAYLOAD_TYPE) -> bytes:
    """A DSSE envelope of `payload`, signed by `key` (keyid: the key's public hint)."""
    signature = key.sign(pae(payload_type, payload))
    return canonical_json({
        "payload": _b64(payload),
        "payloadType": payload_type,
        "signatures": [{"keyid": key.public.hint, "sig": _b64(signature)}],
    })


@dataclass(frozen=True)
class Envelope:
    """A verified DSSE envelope's payload; for in-toto ones, the statement's parts."""

    payload_type: str
    payload: bytes = field(repr=False)
    predicate_type: str | None
    subject_digests: tuple[str, ...]


def open_envelope(data: bytes, key: VerifyingKey, where: str) -> Envelope:
    """Verify a DSSE envelope under `key` and read its in-toto statement.

    VerificationError when no signature of the envelope verifies, naming `where`.
    """
    try:
        doc = _object(json_input.loads(data))
        payload = base64.b64decode(doc["payload"], validate=True)
        payload_type = str(doc["payloadType"])
        signatures = [base64.b64decode(s["sig"]) for s in doc["signatures"]]
    except (ValueError, KeyError, TypeError) as e:
        raise VerificationError(f"{where}: not a DSSE envelope ({e})") from None
    signed = pae(payload_type, payload)
    if not any(key.verify(sig, signed) for sig in signatures):
        raise VerificationError(f"{where}: no signature of the envelope verifies with the key")
    predicate_type: str | None = None
    digests: tuple[str, ...] = ()
    if payload_type == IN_TOTO_PAYLOAD_TYPE:
        try:
            statement = _object(json_input.loads(payload))
            predicate_type = str(statement["predicateType"])
            digests = tuple(
                f"{alg}:{value}"
                for subject in statement["subject"]
                for alg, value in sorted(subject["digest"].items())
            )
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise VerificationError(f"{where}: not an in-toto statement ({e})") from None
    return Envelope(payload_type, payload, predicate_type, digests)


def sigstore_bundle(envelope: bytes, key: SigningKey) -> bytes:
    """A Sigstore bundle v0.3 around a DSSE envelope, naming the key by its hint (no Rekor
    entry, no certificate: what `cosign sign --key` makes without a transparency log)."""
    return canonical_json({
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": key.public.hint}, "tlogEntries": []},
        "dsseEnvelope": json_input.loads(envelope),
    })


def bundle_envelope(data: bytes, where: str) -> bytes:
    """The DSSE envelope inside a Sigstore bundle (to verify with `open_envelope`)."""
    try:
        return canonical_json(_object(json_input.loads(data))["dsseEnvelope"])
    except (ValueError, KeyError, TypeError) as e:
        raise VerificationError(f"{where}: not a Sigstore bundle with a DSSE envelope ({e})") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError("not a JSON object")
    return value

