"""Byte-stream protocols: the least a reader or a writer of bytes must offer.

pyimg streams layers through chains of small wrappers (hashing, compressing, decompressing,
tar members) that are not files. Typing them as `BinaryIO` would claim methods they lack;
these protocols name the one method each side really calls.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["ByteReader", "ByteWriter"]


class ByteReader(Protocol):
    """Something to `read` bytes from: a file, a decompressor, a tar member, a hashing wrapper."""

    def read(self, size: int = -1, /) -> bytes: ...


class ByteWriter(Protocol):
    """Something to `write` bytes to: a file, a hashing or a compressing writer."""

    def write(self, data: bytes | bytearray | memoryview, /) -> int: ...
