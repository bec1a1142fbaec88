"""Subresource-integrity pins (`sha512-<base64>`, as npm locks write them): parsing, hashing a
download by several algorithms at once, and the repository cache's index from such a pin to the
sha256 its blob is stored under.

The content store is keyed by sha256 only. A blob pinned by sha384 or sha512 is verified against
that pin when it is downloaded, stored under its sha256, and the pair is recorded in
`<cache_root>/sri/<algorithm>/<hex>` (a file holding the sha256 hex). A later lookup reads that
file and then verifies the blob against its sha256, as every store read does: the blob is the
one whose sha512 was checked, as far as sha256 is collision-resistant, and an index file that
names a missing or corrupt blob is ignored (the blob is downloaded and checked again).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from pyimg.core.cas import atomic_write_bytes

__all__ = ["ALGORITHMS", "Sri", "SriIndex", "parse_sri", "strongest_sri"]

# Strongest first: where an integrity string lists several, the strongest is the pin.
ALGORITHMS = ("sha512", "sha384", "sha256")
_SIZES = {"sha512": 64, "sha384": 48, "sha256": 32}
_HEX = re.compile(r"^[0-9a-f]+$")


@dataclass(frozen=True)
class Sri:
    """One integrity pin: an algorithm and its digest (hex)."""

    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}-{base64.b64encode(bytes.fromhex(self.hex)).decode()}"


def parse_sri(text: str) -> Sri:
    """`sha512-<base64>` (also sha384, sha256) as an Sri; ValueError names what is wrong."""
    algorithm, sep, b64 = text.strip().partition("-")
    if not sep or algorithm not in _SIZES:
        raise ValueError(
            f"{text!r} is not an integrity string like \"sha512-<base64>\" (sha512, sha384 or "
            "sha256)"
        )
    b64 = b64.split("?", 1)[0]  # SRI allows options after '?'; none changes the digest
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{text!r}: the digest is not valid base64") from None
    if len(raw) != _SIZES[algorithm]:
        raise ValueError(f"{text!r}: a {algorithm} digest has {_SIZES[algorithm]} bytes, not {len(raw)}")
    return Sri(algorithm, raw.hex())


def strongest_sri(text: str) -> Sri:
    """The strongest supported pin of a space-separated integrity list (npm writes
    `sha1-… sha512-…` for some packages); sha1 alone is refused (ValueError)."""
    found = []
    for token in text.split():
        if token.partition("-")[0] in _SIZES:
            found.append(parse_sri(token))
    if not found:
        raise ValueError(
            f"{text!r} has no sha512, sha384 or sha256 digest (sha1 is too weak to pin a download)"
        )
    return min(found, key=lambda s: ALGORITHMS.index(s.algorithm))


def hash_file_by(path: Path, algorithms: tuple[str, ...]) -> dict[str, str]:
    """The hex digests of the file by each algorithm, in one read."""
    hashers = {a: hashlib.new(a) for a in algorithms}
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            for h in hashers.values():
                h.update(chunk)
    return {a: h.hexdigest() for a, h in hashers.items()}


class SriIndex:
    """`<cache_root>/sri/<algorithm>/<hex>` -> the sha256 hex of the verified blob."""

    def __init__(self, cache_root: Path) -> None:
        self.root = cache_root / "sri"

    def get(self, sri: Sri) -> str | None:
        if sri.algorithm == "sha256":
            return sri.hex
        try:
            text = (self.root / sri.algorithm / sri.hex).read_text().strip()
        except (FileNotFoundError, NotADirectoryError):
            return None
        return text if len(text) == 64 and _HEX.match(text) else None

    def record(self, sri: Sri, sha256: str) -> None:
        if sri.algorithm == "sha256":
            return
        path = self.root / sri.algorithm / sri.hex
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, sha256.encode())
