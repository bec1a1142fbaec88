"""layer_from_tar: one pass computes diff_id, blob digest and size; inputs in any compression."""

from __future__ import annotations

import gzip
import hashlib
import io
from pathlib import Path

import pytest
import zstandard
from pyimg.errors import UserInputError
from pyimg.oci.layer import Layer, layer_from_tar
from pyimg.oci.media_types import OCI_LAYER_GZIP, OCI_LAYER_ZSTD
from pyimg.oci.tar import TarEntry, write_tar


@pytest.fixture
def tar_bytes() -> bytes:
    buf = io.BytesIO()
    write_tar(buf, [TarEntry("a/b.txt", data=b"hello " * 1000), TarEntry("c", "dir")])
    return buf.getvalue()


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_layer_digests(tmp_path: Path, tar_bytes: bytes, compression: str) -> None:
    src = tmp_path / "in.tar"
    src.write_bytes(tar_bytes)
    out = tmp_path / "blob"
    layer = layer_from_tar(src, out, compression)
    blob = out.read_bytes()
    assert layer.diff_id.hex == hashlib.sha256(tar_bytes).hexdigest()
    assert layer.descriptor.digest.hex == hashlib.sha256(blob).hexdigest()
    assert layer.descriptor.size == len(blob)
    assert (
        layer.descriptor.media_type == {"gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD}[compression]
    )
    assert Layer.from_json(layer.to_json(), "x") == layer


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_compressed_inputs_give_the_same_blob(
    tmp_path: Path, tar_bytes: bytes, compression: str
) -> None:
    variants = {
        "plain": tar_bytes,
        "gz": gzip.compress(tar_bytes, compresslevel=1, mtime=123),
        "zst": zstandard.ZstdCompressor(level=19).compress(tar_bytes),
    }
    blobs = set()
    for name, payload in variants.items():
        src = tmp_path / f"in.{name}"
        src.write_bytes(payload)
        layer_from_tar(src, tmp_path / f"out.{name}", compression)
        blobs.add((tmp_path / f"out.{name}").read_bytes())
    assert len(blobs) == 1


def test_not_a_tar(tmp_path: Path) -> None:
    src = tmp_path / "x"
    src.write_bytes(b"this is not a tar archive" * 100)
    with pytest.raises(UserInputError, match="not a tar archive"):
        layer_from_tar(src, tmp_path / "out", "gzip", what="layer x")


def test_corrupt_gzip(tmp_path: Path, tar_bytes: bytes) -> None:
    src = tmp_path / "x.gz"
    src.write_bytes(gzip.compress(tar_bytes)[:-30])
    with pytest.raises(UserInputError, match="corrupt compressed stream"):
        layer_from_tar(src, tmp_path / "out", "zstd")


def test_bad_compression(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="compression"):
        layer_from_tar(tmp_path / "x", tmp_path / "out", "bzip2")
