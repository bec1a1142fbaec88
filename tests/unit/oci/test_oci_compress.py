"""Compression: fixed gzip headers, multi-member streams, bytes independent of the thread count."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import random

import pytest
import zstandard
from pyimg.oci.compress import (
    CompressingWriter,
    HashingWriter,
    compress_stream,
    detect_compression,
    gzip_member,
    open_decompressed,
    read_exact,
)
from pyimg.oci.format import GZIP_CHUNK, OUTPUT_FORMAT_VERSION, ZSTD_JOB_SIZE


def _data(n: int) -> bytes:
    rnd = random.Random(42)
    return bytes(rnd.getrandbits(8) for _ in range(1000)) * (n // 1000) + b"tail"


class _Trickle(io.RawIOBase):
    """Returns short reads, as decompressors do: chunking must not depend on read sizes."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = min(n if n >= 0 else len(self._data), 7777)
        out, self._data = self._data[:n], self._data[n:]
        return out


def _compress(data: bytes, compression: str, jobs: int, trickle: bool = False) -> bytes:
    out = io.BytesIO()
    src = _Trickle(data) if trickle else io.BytesIO(data)
    compress_stream(src, out, compression, jobs)  # type: ignore[arg-type]
    return out.getvalue()


def test_gzip_member_header_is_fixed() -> None:
    member = gzip_member(b"hello")
    # magic, deflate, no flags (no name/comment), mtime 0, XFL 0, OS 255
    assert member[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    assert gzip.decompress(member) == b"hello"


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_bytes_do_not_depend_on_jobs_or_read_sizes(compression: str) -> None:
    # Several gzip chunks and several zstd jobs, so that workers really share the input.
    data = _data(int(2.5 * (GZIP_CHUNK if compression == "gzip" else ZSTD_JOB_SIZE)))
    outputs = {
        _compress(data, compression, jobs, trickle)
        for jobs in (1, 2, 4)
        for trickle in (False, True)
    }
    assert len(outputs) == 1
    (blob,) = outputs
    reader, kind = open_decompressed(io.BytesIO(blob))  # type: ignore[arg-type]
    assert kind == compression
    assert reader.read() == data


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_writer_bytes_do_not_depend_on_how_writes_are_split(compression: str) -> None:
    data = _data(2 * GZIP_CHUNK)  # two whole chunks and a short tail
    rnd = random.Random(7)
    out = io.BytesIO()
    writer = CompressingWriter(out, compression, jobs=2)  # type: ignore[arg-type]
    at = 0
    while at < len(data):  # header-sized writes, odd sizes, and writes of several chunks
        n = rnd.choice([512, 1, 7777, GZIP_CHUNK + 3, 3 * GZIP_CHUNK])
        writer.write(memoryview(data)[at : at + n])
        at += n
    digest, size = writer.finish()
    assert out.getvalue() == _compress(data, compression, 1)
    assert size == len(data) and digest.hex == hashlib.sha256(data).hexdigest()


def test_gzip_is_one_member_per_chunk() -> None:
    data = _data(int(2.5 * GZIP_CHUNK))
    blob = _compress(data, "gzip", 2)
    assert blob.count(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff") >= 3
    assert gzip.decompress(blob) == data


def test_zstd_single_and_multi_threaded_modes_differ_so_we_pin_mt() -> None:
    # Documents why compress_stream never uses threads=0: it would change the bytes.
    data = _data(3 * GZIP_CHUNK)
    st = zstandard.ZstdCompressor(level=3, write_checksum=True, threads=0).compressobj()
    single = st.compress(data) + st.flush()
    assert single != _compress(data, "zstd", 1)


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_empty_input(compression: str) -> None:
    out = io.BytesIO()
    digest, size = compress_stream(io.BytesIO(b""), out, compression)  # type: ignore[arg-type]
    assert size == 0
    assert str(digest).endswith("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    reader, _ = open_decompressed(io.BytesIO(out.getvalue()))  # type: ignore[arg-type]
    assert reader.read() == b""


def test_hashing_writer_and_returned_digest() -> None:
    data = os.urandom(1000)
    sink = HashingWriter(io.BytesIO())  # type: ignore[arg-type]
    digest, size = compress_stream(io.BytesIO(data), sink, "zstd")  # type: ignore[arg-type]
    assert size == 1000
    assert digest.hex == hashlib.sha256(data).hexdigest()
    assert sink.size > 0


def test_detect_and_read_exact() -> None:
    assert detect_compression(b"\x1f\x8b\x08\x00") == "gzip"
    assert detect_compression(b"\x28\xb5\x2f\xfd") == "zstd"
    assert detect_compression(b"ustar") == "none"
    assert read_exact(_Trickle(b"x" * 20000), 15000) == b"x" * 15000  # type: ignore[arg-type]


def test_unknown_compression() -> None:
    with pytest.raises(ValueError, match="unknown compression"):
        compress_stream(io.BytesIO(b""), io.BytesIO(), "lz4")  # type: ignore[arg-type]


def test_output_format_version_names_every_knob() -> None:
    for needle in ("level-6", f"chunk-{GZIP_CHUNK}", "zlib-", "libzstd-", "level-3"):
        assert needle in OUTPUT_FORMAT_VERSION
