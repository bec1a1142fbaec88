"""GPG simple signing, as containers/image (podman, skopeo) reads it from lookaside storage.

The signature is `gpg --sign` (an OpenPGP message, not a detached signature) over an "atomic
container signature" payload, written to `DIR/<repository path>@sha256=<hex>/signature-N`:
the layout of a `lookaside:` URL in registries.d (docs/supply-chain.md). The system's gpg signs,
with its own keyring and agent; pyimg never sees the private key.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

from pyimg.core.cas import atomic_file
from pyimg.core.digest import Digest
from pyimg.errors import SigningKeyError
from pyimg.registry.client import RegistryClient
from pyimg.registry.reference import Reference

from .formats import ATOMIC_SIGNATURE, simple_signing_payload

__all__ = ["gpg_sign_image", "lookaside_dir"]

_MAX_SIGNATURES = 1000  # signature-1 ... : containers/image reads them until one is missing


def lookaside_dir(root: Path, ref: Reference, digest: Digest) -> Path:
    """Where containers/image looks for the signatures of `digest` in `ref`'s repository under
    a lookaside root: the repository path (no registry host), then `@algorithm=hex`."""
    repository = root / ref.repository
    return repository.parent / f"{repository.name}@{digest.algorithm}={digest.hex}"


def gpg_sign_image(
    client: RegistryClient,
    ref: Reference,
    key_id: str,
    lookaside: Path,
    environ: Mapping[str, str],
) -> Path:
    """Sign the image `ref` names with the gpg key `key_id`; returns the signature file.

    The payload names `ref` with its tag when it has one: a `signedBy` policy's default identity
    check (matchRepoDigestOrExact) then accepts a pull by that tag or by digest.
    """
    digest = client.get_manifest(ref).digest
    identity = f"{ref.name}:{ref.tag}" if ref.tag else ref.name
    payload = simple_signing_payload(identity, digest, ATOMIC_SIGNATURE, creator="pyimg")
    try:
        done = subprocess.run(
            ["gpg", "--batch", "--no-tty", "--local-user", key_id, "--sign"],
            input=payload,
            capture_output=True,
            env=dict(environ),
            check=False,
        )
    except FileNotFoundError:
        raise SigningKeyError("--gpg-key needs the gpg command, which is not installed") from None
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise SigningKeyError(f"gpg could not sign with key {key_id!r}: {' / '.join(tail)}")
    directory = lookaside_dir(lookaside, ref, digest)
    directory.mkdir(parents=True, exist_ok=True)
    for n in range(1, _MAX_SIGNATURES + 1):
        path = directory / f"signature-{n}"
        if not path.exists():
            with atomic_file(path) as f:
                f.write(done.stdout)
            return path
    raise SigningKeyError(f"{directory}: already holds {_MAX_SIGNATURES} signatures")
