"""signing/keys.py: every way a key can be wrong is one SigningKeyError naming its source."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pyimg.errors import SigningKeyError
from pyimg.signing.keys import (
    KeyMaterial,
    encrypt_cosign,
    generate_key,
    load_signing_key,
    load_verifying_key,
    open_signing_key,
    open_verifying_key,
    read_key_material,
)


def _pem(key: object, password: bytes | None = None) -> bytes:
    encryption = (serialization.BestAvailableEncryption(password) if password
                  else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             encryption)


def _error(material: KeyMaterial, password: bytes | None = None) -> str:
    with pytest.raises(SigningKeyError) as e:
        load_signing_key(material, password)
    assert e.value.exit_code == 2
    return str(e.value)


def test_pkcs8_plain_encrypted_and_sec1_keys_sign_deterministically() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    sec1 = key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())
    for data, password in ((_pem(key), None), (_pem(key, b"pw"), b"pw"), (sec1, None)):
        signer = load_signing_key(KeyMaterial("k.pem", data), password)
        assert signer.sign(b"payload") == signer.sign(b"payload")  # RFC 6979
        assert signer.public.verify(signer.sign(b"payload"), b"payload")
        assert not signer.public.verify(signer.sign(b"payload"), b"other")


def test_wrong_or_missing_password_and_wrong_key_types() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    encrypted = KeyMaterial("k.pem", _pem(key, b"right"))
    assert _error(encrypted, b"wrong") == "key k.pem: wrong password (cannot decrypt the key)"
    assert _error(encrypted, b"") == "key k.pem: wrong password (cannot decrypt the key)"
    assert "encrypted; give its password" in _error(encrypted)
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert "a RSA key; pyimg signs with ECDSA P-256" in _error(KeyMaterial("r", _pem(rsa_key)))
    assert "Ed25519" in _error(KeyMaterial("e", _pem(ed25519.Ed25519PrivateKey.generate())))
    assert "ECDSA secp384r1" in _error(KeyMaterial("p", _pem(ec.generate_private_key(ec.SECP384R1()))))
    public = generate_key().public.pem()
    assert "this is a public key" in _error(KeyMaterial("pub", public))
    assert "not a PEM private key" in _error(KeyMaterial("junk", b"not a key"))
    with pytest.raises(SigningKeyError, match="this is a private key"):
        load_verifying_key(KeyMaterial("k", _pem(key)))
    rsa_public = rsa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(SigningKeyError, match="a RSA public key"):
        load_verifying_key(KeyMaterial("r.pub", rsa_public))


def test_cosign_encrypted_format() -> None:
    pytest.importorskip("nacl")
    key = generate_key()
    data = encrypt_cosign(key.private_der(), b"pw")
    assert data.startswith(b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    loaded = load_signing_key(KeyMaterial("cosign.key", data), b"pw")
    assert loaded.public.hint == key.public.hint
    assert "wrong password (cannot decrypt the cosign key)" in _error(KeyMaterial("c", data), b"no")
    assert "encrypted (cosign format)" in _error(KeyMaterial("c", data))
    # `cosign generate-key-pair` accepts an empty password; given explicitly, it is one.
    empty = encrypt_cosign(key.private_der(), b"")
    assert load_signing_key(KeyMaterial("c", empty), b"").public.hint == key.public.hint
    assert "give its password" in _error(KeyMaterial("c", empty))


def test_sources_env_and_files_and_passwords(tmp_path: Path) -> None:
    key = generate_key()
    pem = key.private_pem(b"secret")
    env = {"KEY": pem.decode(), "PW": "secret"}
    assert open_signing_key("env://KEY", env, password_env="PW").public.hint == key.public.hint
    (tmp_path / "pw").write_bytes(b"secret\n")  # `echo secret > pw`: the newline is not in it
    (tmp_path / "k.pem").write_bytes(pem)
    signer = open_signing_key(str(tmp_path / "k.pem"), {}, password_file=str(tmp_path / "pw"))
    assert signer.public.hint == key.public.hint
    assert "secret" not in repr(signer) and "PRIVATE" not in repr(signer)
    with pytest.raises(SigningKeyError, match="environment variable NOPE is not set"):
        read_key_material("env://NOPE", {})
    with pytest.raises(SigningKeyError, match="cannot read it"):
        read_key_material(str(tmp_path / "missing.pem"), {})
    with pytest.raises(SigningKeyError, match="password variable PW2 is not set"):
        open_signing_key("env://KEY", env, password_env="PW2")
    with pytest.raises(SigningKeyError, match="not both"):
        open_signing_key("env://KEY", env, password_env="PW", password_file="x")
    env["PUB"] = key.public.pem().decode()
    assert open_verifying_key("env://PUB", env).hint == key.public.hint
