"""Layer blobs from tar streams: diff_id, compression, digest and size in one streaming pass."""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyimg.core.digest import Digest
from pyimg.core.streams import ByteReader, ByteWriter
from pyimg.errors import UserInputError
from pyimg.oci.compress import (
    COMPRESSIONS,
    DECOMPRESSION_ERRORS,
    CompressingWriter,
    HashingWriter,
    open_decompressed,
    read_exact,
)
from pyimg.oci.format import GZIP_CHUNK
from pyimg.oci.media_types import layer_media_type
from pyimg.oci.model import Descriptor

__all__ = ["Layer", "layer_from_stream", "layer_from_tar", "write_layer"]


@dataclass(frozen=True)
class Layer:
    """A layer blob's descriptor plus its diff_id (sha256 of the uncompressed tar)."""

    descriptor: Descriptor
    diff_id: Digest

    def to_json(self) -> dict[str, Any]:
        """The descriptor file `oci_layer` writes: {mediaType, digest, size, diffId}."""
        return {**self.descriptor.to_json(), "diffId": str(self.diff_id)}

    @classmethod
    def from_json(cls, obj: object, where: str) -> Layer:
        if not isinstance(obj, dict) or "diffId" not in obj:
            raise UserInputError(f"{where}: not a layer descriptor (needs diffId)")
        try:
            diff_id = Digest.parse(str(obj["diffId"]))
        except ValueError as e:
            raise UserInputError(f"{where}: diffId: {e}") from None
        rest = {k: v for k, v in obj.items() if k != "diffId"}
        return cls(Descriptor.from_json(rest, where), diff_id)


def _check_compression(compression: str) -> None:
    if compression not in COMPRESSIONS:
        raise UserInputError(f"compression: expected one of {COMPRESSIONS}, got {compression!r}")


def _check_tar_start(head: bytes, what: str) -> None:
    if len(head) < 512:
        raise UserInputError(f"{what}: not a tar archive (only {len(head)} bytes)")
    if head == b"\0" * 512:
        return  # an empty archive
    try:
        tarfile.TarInfo.frombuf(head, "utf-8", "surrogateescape")
    except tarfile.HeaderError as e:
        raise UserInputError(f"{what}: not a tar archive ({e})") from None


def layer_from_tar(
    src: Path,
    out: Path,
    compression: str,
    *,
    jobs: int = 1,
    check_cancelled: Callable[[], None] | None = None,
    what: str = "layer tar",
) -> Layer:
    """Write the `compression` ('gzip'|'zstd') blob of the tar at `src` to `out`.

    `src` may be a plain, gzip or zstd tar (detected by magic); its uncompressed bytes are
    hashed (diff_id) and recompressed canonically, so the blob depends only on the tar's
    uncompressed bytes. One pass, constant memory.
    """
    _check_compression(compression)  # before opening `src`: a bad argument is the clearer error
    with open(src, "rb") as f:
        return layer_from_stream(
            f, out, compression, jobs=jobs, check_cancelled=check_cancelled, what=what
        )


def layer_from_stream(
    stream: ByteReader,
    out: Path,
    compression: str,
    *,
    jobs: int = 1,
    check_cancelled: Callable[[], None] | None = None,
    what: str = "layer tar",
) -> Layer:
    """Like `layer_from_tar`, reading the tar from `stream` (a file or a pipe; not closed)."""
    _check_compression(compression)
    try:
        reader, _ = open_decompressed(stream)
        head = read_exact(reader, 512)
        _check_tar_start(head, what)

        def copy(writer: ByteWriter) -> None:
            writer.write(head)
            while chunk := reader.read(GZIP_CHUNK):
                writer.write(chunk)

        return write_layer(out, compression, copy, jobs=jobs, check_cancelled=check_cancelled)
    except DECOMPRESSION_ERRORS as e:
        raise UserInputError(f"{what}: corrupt compressed stream: {e}") from None


def write_layer(
    out: Path,
    compression: str,
    write_tar: Callable[[ByteWriter], None],
    *,
    jobs: int = 1,
    check_cancelled: Callable[[], None] | None = None,
) -> Layer:
    """The layer whose uncompressed tar `write_tar(writer)` writes, compressed into `out` as it
    is written: hashing, compression and the blob's digest in the same pass, on the caller's
    thread (zstd's and gzip's own workers aside), with no tar on disk and no pipe."""
    _check_compression(compression)
    with open(out, "wb") as o:
        sink = HashingWriter(o)
        writer = CompressingWriter(sink, compression, jobs, check_cancelled)
        try:
            write_tar(writer)
        except BaseException:
            writer.abort()
            raise
        diff_id, _size = writer.finish()
    descriptor = Descriptor(layer_media_type(compression), sink.digest(), sink.size)
    return Layer(descriptor, diff_id)
