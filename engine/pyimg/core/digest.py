"""Content digests as values (`sha256:<hex>`), and streaming hashing of files and bytes."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["CHUNK", "Digest", "canonical_json", "digest_bytes", "digest_file", "digest_stream"]

CHUNK = 1 << 20
_HEX = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, order=True, slots=True)
class Digest:
    """A validated sha256 digest. `str(d)` is the OCI form `sha256:<hex>`."""

    algorithm: str
    hex: str

    def __post_init__(self) -> None:
        if self.algorithm != "sha256" or not _HEX.match(self.hex):
            raise ValueError(f"not a sha256 digest: {self.algorithm}:{self.hex}")

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse `sha256:<64 hex>`; raises ValueError with the offending text."""
        algorithm, sep, hexpart = text.partition(":")
        if not sep:
            raise ValueError(f"not a digest (expected sha256:<hex>): {text!r}")
        try:
            return cls(algorithm, hexpart)
        except ValueError:
            raise ValueError(f"not a sha256 digest: {text!r}") from None

    @classmethod
    def from_hex(cls, hexpart: str) -> Digest:
        return cls("sha256", hexpart)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def digest_bytes(data: bytes) -> Digest:
    return Digest("sha256", hashlib.sha256(data).hexdigest())


def digest_stream(stream: BinaryIO) -> tuple[Digest, int]:
    """Hash a stream to its end; returns (digest, size). The caller closes the stream."""
    h = hashlib.sha256()
    size = 0
    while chunk := stream.read(CHUNK):
        h.update(chunk)
        size += len(chunk)
    return Digest("sha256", h.hexdigest()), size


def digest_file(path: str | Path) -> tuple[Digest, int]:
    with open(path, "rb") as f:
        return digest_stream(f)


def canonical_json(value: Any) -> bytes:
    """The one JSON form pyimg hashes and writes where it owns the format: sorted keys, no spaces."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
