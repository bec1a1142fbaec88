"""Signing keys: ECDSA P-256 private and public keys, read from a file or an environment variable.

A private key is PEM PKCS#8 (`PRIVATE KEY`, or `ENCRYPTED PRIVATE KEY` with a password), a SEC1
`EC PRIVATE KEY`, or cosign's `ENCRYPTED SIGSTORE PRIVATE KEY` (scrypt + NaCl secretbox, as
go-securesystemslib's `encrypted` package writes it; needs PyNaCl). Key bytes and passwords only
ever live in memory: no message, repr or file pyimg writes holds them (docs/supply-chain.md).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pyimg.errors import SigningKeyError

__all__ = [
    "ENV_PREFIX",
    "KeyMaterial",
    "SigningKey",
    "VerifyingKey",
    "encrypt_cosign",
    "generate_key",
    "load_signing_key",
    "load_verifying_key",
    "open_signing_key",
    "open_verifying_key",
    "read_key_material",
    "read_password",
]

ENV_PREFIX = "env://"  # `--key env://VAR`: the PEM is in the variable VAR (as cosign spells it)

_COSIGN_PEM_TYPES = (b"ENCRYPTED SIGSTORE PRIVATE KEY", b"ENCRYPTED COSIGN PRIVATE KEY")
# Deterministic ECDSA (RFC 6979): the same key and payload give the same signature bytes, so
# signing twice adds nothing new to a registry and a signed artifact stays reproducible.
_ECDSA = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)


@dataclass(frozen=True)
class KeyMaterial:
    """Key bytes and where they came from (`what`: a path or `env://VAR`, never the bytes)."""

    what: str
    data: bytes = field(repr=False)


def read_key_material(spec: str, environ: Mapping[str, str]) -> KeyMaterial:
    """The bytes `spec` names: `env://VAR` reads the variable, anything else is a file path."""
    if spec.startswith(ENV_PREFIX):
        name = spec[len(ENV_PREFIX) :]
        value = environ.get(name)
        if not value:
            raise SigningKeyError(f"key {spec}: environment variable {name} is not set or empty")
        return KeyMaterial(spec, value.encode())
    try:
        return KeyMaterial(spec, Path(spec).read_bytes())
    except OSError as e:
        raise SigningKeyError(f"key {spec}: cannot read it: {e.strerror or e}") from None


class VerifyingKey:
    """An ECDSA P-256 public key; `hint` names it without revealing anything (sha256 of its DER)."""

    def __init__(self, key: ec.EllipticCurvePublicKey) -> None:
        self._key = key
        der = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.hint = hashlib.sha256(der).hexdigest()

    def pem(self) -> bytes:
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def verify(self, signature: bytes, data: bytes) -> bool:
        """Whether `signature` (DER, as cosign writes it) signs `data` under this key."""
        try:
            self._key.verify(signature, data, _ECDSA)
        except (InvalidSignature, ValueError):
            return False
        return True


class SigningKey:
    """An ECDSA P-256 private key. Its repr and str say nothing of the key."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, what: str) -> None:
        self._key = key
        self.what = what
        self.public = VerifyingKey(key.public_key())

    def __repr__(self) -> str:
        return f"SigningKey({self.what}, public {self.public.hint[:16]})"

    def sign(self, data: bytes) -> bytes:
        """A DER ECDSA-SHA256 signature of `data` (deterministic, RFC 6979)."""
        return self._key.sign(data, _ECDSA)

    def private_der(self) -> bytes:
        """Unencrypted PKCS#8 DER, only to be encrypted at once (cosign's key format)."""
        return self._key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def private_pem(self, password: bytes | None) -> bytes:
        """PEM PKCS#8, encrypted with `password` when given (for `pyimg keygen`)."""
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password)
            if password
            else serialization.NoEncryption()
        )
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )


def generate_key() -> SigningKey:
    return SigningKey(ec.generate_private_key(ec.SECP256R1()), "(new key)")


def load_signing_key(material: KeyMaterial, password: bytes | None) -> SigningKey:
    """The ECDSA P-256 private key in `material`, decrypted with `password` when it is encrypted.

    Every failure is one SigningKeyError naming the key's source and what is wrong (no password,
    a wrong one, not a private key, another algorithm or curve); never the key's bytes.
    """
    what = material.what
    if any(b"-----BEGIN " + t + b"-----" in material.data for t in _COSIGN_PEM_TYPES):
        if password is None:  # cosign allows an empty password, given explicitly
            raise SigningKeyError(f"key {what}: it is encrypted (cosign format); give its password")
        der = _decrypt_cosign(material.data, password, what)
        try:
            key = serialization.load_der_private_key(der, password=None)
        except ValueError:
            raise SigningKeyError(f"key {what}: the decrypted cosign key is not a private key") from None
        return SigningKey(_p256_private(key, what), what)
    encrypted = b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in material.data
    if encrypted and password is None:
        raise SigningKeyError(f"key {what}: it is encrypted; give its password")
    try:
        key = serialization.load_pem_private_key(material.data, password=password if encrypted else None)
    except ValueError as e:
        if encrypted:
            raise SigningKeyError(f"key {what}: wrong password (cannot decrypt the key)") from None
        if b"PUBLIC KEY" in material.data:
            raise SigningKeyError(f"key {what}: this is a public key; signing needs the private key") from None
        raise SigningKeyError(f"key {what}: not a PEM private key ({_first_line(e)})") from None
    except TypeError:
        if encrypted:  # cryptography's answer to an empty password for an encrypted key
            raise SigningKeyError(f"key {what}: wrong password (cannot decrypt the key)") from None
        raise SigningKeyError(f"key {what}: not a PEM private key") from None
    return SigningKey(_p256_private(key, what), what)


def load_verifying_key(material: KeyMaterial) -> VerifyingKey:
    """The ECDSA P-256 public key in `material` (PEM SubjectPublicKeyInfo)."""
    try:
        key = serialization.load_pem_public_key(material.data)
    except ValueError:
        if b"PRIVATE KEY" in material.data:
            raise SigningKeyError(
                f"key {material.what}: this is a private key; verify with the public key"
            ) from None
        raise SigningKeyError(f"key {material.what}: not a PEM public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SigningKeyError(
            f"key {material.what}: a {_describe(key)} public key; pyimg verifies ECDSA P-256"
        )
    return VerifyingKey(key)


def _p256_private(key: object, what: str) -> ec.EllipticCurvePrivateKey:
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SigningKeyError(f"key {what}: a {_describe(key)} key; pyimg signs with ECDSA P-256")
    return key


def _describe(key: object) -> str:
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return f"ECDSA {key.curve.name}"
    name = type(key).__name__.lstrip("_")
    for kind in ("RSA", "Ed25519", "Ed448", "DSA", "X25519", "X448"):
        if name.upper().startswith(kind.upper()):
            return kind
    return name


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _decrypt_cosign(data: bytes, password: bytes, what: str) -> bytes:
    """The PKCS#8 DER inside cosign's encrypted key: JSON with scrypt parameters and a secretbox."""
    try:
        body = b"".join(
            line
            for line in data.strip().splitlines()
            if line and not line.startswith(b"-----")
        )
        doc = json.loads(base64.b64decode(body))
        kdf, cipher = doc["kdf"], doc["cipher"]
        if kdf["name"] != "scrypt" or cipher["name"] != "nacl/secretbox":
            raise SigningKeyError(
                f"key {what}: unsupported cosign key encryption {kdf['name']}/{cipher['name']}"
            )
        params = kdf["params"]
        salt = base64.b64decode(kdf["salt"])
        nonce = base64.b64decode(cipher["nonce"])
        ciphertext = base64.b64decode(doc["ciphertext"])
        n, r, p = int(params["N"]), int(params["r"]), int(params["p"])
    except (ValueError, KeyError, TypeError) as e:
        raise SigningKeyError(f"key {what}: not a readable cosign key ({_first_line(e)})") from None
    try:
        from nacl.exceptions import CryptoError
        from nacl.secret import SecretBox
    except ImportError:
        raise SigningKeyError(
            f"key {what}: cosign's encrypted key format needs PyNaCl (pip install 'pyimg[cosign]'),"
            " or convert the key to PEM PKCS#8"
        ) from None
    secret = hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=256 << 20, dklen=32)
    try:
        return bytes(SecretBox(secret).decrypt(ciphertext, nonce))
    except CryptoError:
        raise SigningKeyError(f"key {what}: wrong password (cannot decrypt the cosign key)") from None


def encrypt_cosign(der: bytes, password: bytes) -> bytes:
    """Cosign's `ENCRYPTED SIGSTORE PRIVATE KEY` PEM of a PKCS#8 DER key (for tests, keygen)."""
    import os

    from nacl.secret import SecretBox

    salt, nonce = os.urandom(32), os.urandom(24)
    n, r, p = 32768, 8, 1
    secret = hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=256 << 20, dklen=32)
    ciphertext = SecretBox(secret).encrypt(der, nonce).ciphertext
    doc = {
        "kdf": {
            "name": "scrypt",
            "params": {"N": n, "r": r, "p": p},
            "salt": base64.b64encode(salt).decode(),
        },
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
        "ciphertext": base64.b64encode(ciphertext).decode(),
    }
    b64 = base64.b64encode(json.dumps(doc).encode()).decode()
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return (
        "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"
        + "\n".join(lines)
        + "\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n"
    ).encode()


def open_signing_key(
    spec: str,
    environ: Mapping[str, str],
    password_env: str | None = None,
    password_file: str | None = None,
) -> SigningKey:
    """The private key `spec` names (a path or `env://VAR`), with its password read from the
    environment variable `password_env` or the file `password_file` (one trailing newline
    dropped), never from the command line."""
    password = read_password(spec, environ, password_env, password_file)
    return load_signing_key(read_key_material(spec, environ), password)


def read_password(
    what: str,
    environ: Mapping[str, str],
    password_env: str | None = None,
    password_file: str | None = None,
) -> bytes | None:
    """The password of key `what` from the variable `password_env` or the file `password_file`
    (one trailing newline dropped); None when neither is given."""
    if password_env and password_file:
        raise SigningKeyError("give the key's password through an environment variable or a file, not both")
    if password_env:
        value = environ.get(password_env)
        if value is None:
            raise SigningKeyError(f"key {what}: password variable {password_env} is not set")
        return value.encode()
    if password_file:
        try:
            return Path(password_file).read_bytes().removesuffix(b"\n")
        except OSError as e:
            raise SigningKeyError(f"key {what}: cannot read the password file {password_file}: "
                                  f"{e.strerror or e}") from None
    return None


def open_verifying_key(spec: str, environ: Mapping[str, str]) -> VerifyingKey:
    """The public key `spec` names (a path or `env://VAR`)."""
    return load_verifying_key(read_key_material(spec, environ))
