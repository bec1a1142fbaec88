"""`pyimg sign`, `pyimg attest`, `pyimg verify`, `pyimg keygen`: signatures and attestations of
images in a registry (docs/supply-chain.md). Keys come from files or `env://VAR`, passwords from
an environment variable or a file: never from the command line, where `ps` would show them."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pyimg.cli.commands import command
from pyimg.errors import UsageError

if TYPE_CHECKING:
    from pyimg.registry.client import RegistryClient
    from pyimg.registry.reference import Reference

__all__ = ["cmd_attest", "cmd_keygen", "cmd_sign", "cmd_verify"]


def _registry_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry-config", metavar="FILE",
                   help="registry credentials (docker config.json format; default "
                        "~/.docker/config.json)")
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST",
                   help="allow plain http to HOST (loopback registries always are)")


def _password_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--key-password-env", metavar="VAR",
                   help="the environment variable holding the key's password")
    p.add_argument("--key-password-file", metavar="FILE",
                   help="a file holding the key's password (one trailing newline ignored)")


def _configure_sign(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="the image to sign, registry/repo:tag or registry/repo@digest")
    p.add_argument("--key", help="ECDSA P-256 private key: a PEM file, or env://VAR")
    _password_flags(p)
    p.add_argument("--gpg-key", metavar="ID",
                   help="sign with this gpg key instead (simple signing, for podman/skopeo)")
    p.add_argument("--lookaside", metavar="DIR",
                   help="with --gpg-key: the lookaside storage directory to write signatures to")
    _registry_flags(p)


def _configure_attest(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="the image the attestation is about")
    p.add_argument("--key", required=True, help="ECDSA P-256 private key: a PEM file, or env://VAR")
    _password_flags(p)
    p.add_argument("--predicate", required=True, action="append", metavar="FILE",
                   help="the predicate (JSON), or a whole in-toto statement about the image; "
                        "repeatable: all are attached in one batch")
    p.add_argument("--type", action="append", default=[],
                   help="spdx (default), cyclonedx, slsaprovenance (v1), or a predicate type "
                        "URI; one for all predicates or one per --predicate")
    _registry_flags(p)


def _configure_verify(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", help="the image to verify")
    p.add_argument("--key", required=True, help="ECDSA P-256 public key: a PEM file, or env://VAR")
    p.add_argument("--require", default="", metavar="LIST",
                   help="attestations that must be present and signed: sbom,provenance")
    _registry_flags(p)


def _configure_keygen(p: argparse.ArgumentParser) -> None:
    p.add_argument("prefix", help="writes PREFIX.key (private, mode 0600) and PREFIX.pub")
    _password_flags(p)
    p.add_argument("--cosign-format", action="store_true",
                   help="write the private key in cosign's encrypted format (needs a password)")


def _client(args: argparse.Namespace) -> RegistryClient:
    from pyimg.external.options import RegistryOptions

    return RegistryOptions(args.registry_config, tuple(args.insecure_registry)).client()


def _reference(text: str) -> Reference:
    from pyimg.registry.reference import parse_reference

    try:
        return parse_reference(text)
    except ValueError as e:
        raise UsageError(f"image reference {text!r}: {e}") from None


@command("sign", "sign an image in a registry (cosign format, or gpg simple signing)",
         _configure_sign)
def cmd_sign(args: argparse.Namespace) -> int:
    ref = _reference(args.image)
    client = _client(args)
    try:
        if args.gpg_key:
            from pyimg.signing.gpg import gpg_sign_image

            if not args.lookaside or args.key:
                raise UsageError("--gpg-key needs --lookaside DIR, and no --key")
            path = gpg_sign_image(client, ref, args.gpg_key, Path(args.lookaside), os.environ)
            print(path)
            return 0
        if not args.key:
            raise UsageError("give --key (a PEM private key or env://VAR) or --gpg-key")
        from pyimg.signing.attach import sign_image
        from pyimg.signing.keys import open_signing_key

        key = open_signing_key(args.key, os.environ, args.key_password_env, args.key_password_file)
        subject = sign_image(client, ref, key)
    finally:
        client.close()
    print(f"signed {ref.name}@{subject.digest}")
    return 0


@command("attest", "attach a signed in-toto attestation (SBOM, provenance) to an image",
         _configure_attest)
def cmd_attest(args: argparse.Namespace) -> int:
    from pyimg.signing.attach import Predicate, attest_image
    from pyimg.signing.keys import open_signing_key

    ref = _reference(args.image)
    types = args.type or ["spdx"]
    if len(types) not in (1, len(args.predicate)):
        raise UsageError("give one --type for all predicates, or one per --predicate, in order")
    predicates = []
    for i, path in enumerate(args.predicate):
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise UsageError(f"--predicate {path}: {e.strerror or e}") from None
        predicates.append(Predicate(data, types[min(i, len(types) - 1)], path))
    key = open_signing_key(args.key, os.environ, args.key_password_env, args.key_password_file)
    client = _client(args)
    try:
        subject = attest_image(client, ref, key, predicates)
    finally:
        client.close()
    print(f"attested {ref.name}@{subject.digest}")
    return 0


@command("verify", "verify an image's signatures and attestations with a public key",
         _configure_verify)
def cmd_verify(args: argparse.Namespace) -> int:
    from pyimg.signing.attach import REQUIREMENTS, verify_image
    from pyimg.signing.keys import open_verifying_key

    ref = _reference(args.image)
    require = [r.strip() for r in args.require.split(",") if r.strip()]
    for name in require:
        if name not in REQUIREMENTS:
            raise UsageError(f"--require {name!r}: give a list of {', '.join(sorted(REQUIREMENTS))}")
    key = open_verifying_key(args.key, os.environ)
    client = _client(args)
    try:
        found = verify_image(client, ref, key, require)
    finally:
        client.close()
    attested = ", ".join(found.predicate_types) or "none"
    print(f"verified {ref.name}@{found.subject.digest}: {found.signatures} signature(s), "
          f"{found.bundles} bundle(s), attestations: {attested}")
    for platform, image in found.images:  # of an index: each image it lists, verified too
        attested = ", ".join(image.predicate_types) or "none"
        print(f"verified {ref.name}@{image.subject.digest} ({platform}): {image.signatures} "
              f"signature(s), {image.bundles} bundle(s), attestations: {attested}")
    return 0


@command("keygen", "write a new ECDSA P-256 key pair (PREFIX.key, PREFIX.pub)", _configure_keygen)
def cmd_keygen(args: argparse.Namespace) -> int:
    from pyimg.core.cas import atomic_file
    from pyimg.signing.keys import encrypt_cosign, generate_key, read_password

    password = read_password(args.prefix + ".key", os.environ, args.key_password_env,
                             args.key_password_file)
    if args.cosign_format and not password:
        raise UsageError("--cosign-format needs a password (--key-password-env or -file)")
    private, public = Path(args.prefix + ".key"), Path(args.prefix + ".pub")
    for path in (private, public):
        if path.exists():
            raise UsageError(f"{path} exists; pyimg keygen never overwrites a key")
    key = generate_key()
    data = encrypt_cosign(key.private_der(), password) if args.cosign_format and password \
        else key.private_pem(password)
    with atomic_file(private, mode=0o600) as f:
        f.write(data)
    with atomic_file(public) as f:
        f.write(key.public.pem())
    print(f"wrote {private} and {public}", file=sys.stderr)
    return 0
