"""actions/layer_record.py: the files a layer action records from the tar it writes are the
ones an SBOM reads back from the layer blob; a tar left to tarfile, or a failed write, records
nothing; a record is trusted only for the layer it names."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from pyimg.actions.layer_record import LayerFilesTee, load_layer_files, store_layer_files
from pyimg.actions.sbom import layer_files
from pyimg.core.action_cache import ActionCache
from pyimg.core.cas import ContentStore
from pyimg.oci.layer import write_layer


def _tar_bytes(global_pax: dict[str, str] | None = None, files: int = 300) -> bytes:
    """A tar with files (some larger than the tee's chunk), a hard link and a symlink."""
    buf = io.BytesIO()
    fmt = tarfile.PAX_FORMAT if global_pax else tarfile.GNU_FORMAT
    with tarfile.open(fileobj=buf, mode="w", format=fmt, pax_headers=global_pax or {}) as tar:
        for i in range(files):
            data = bytes([i % 251]) * (i * 37 if i % 50 else 3 << 20)
            info = tarfile.TarInfo(f"./srv/d{i % 7}/{'long' * 30 if i == 5 else ''}f{i}")
            info.size, info.mode, info.uid, info.gid = len(data), 0o640 + i % 2, i, 2 * i
            tar.addfile(info, io.BytesIO(data))
        for kind, name, target in ((tarfile.LNKTYPE, "./again", "./srv/d1/f1"),
                                   (tarfile.SYMTYPE, "./bin", "usr/bin")):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tar.addfile(info)
    return buf.getvalue()


def _stores(tmp_path: Path) -> tuple[ContentStore, ActionCache]:
    cas = ContentStore(tmp_path / "cache")
    return cas, ActionCache(tmp_path / "cache", cas)


def _write(tmp_path: Path, tar: bytes, tee: LayerFilesTee, piece: int = 10_000):  # noqa: ANN202
    """The layer blob of `tar` written as oci_layer writes one, through `tee`."""
    def write_tar(out):  # noqa: ANN001, ANN202
        through = tee.writer(out)
        for start in range(0, len(tar), piece):  # writes of uneven sizes, as a writer makes
            through.write(memoryview(tar)[start:start + piece])

    try:
        return write_layer(tmp_path / "blob", "gzip", write_tar)
    finally:
        tee.close()


def test_the_files_recorded_while_writing_are_those_read_back_from_the_blob(
        tmp_path: Path) -> None:
    cas, cache = _stores(tmp_path)
    tee = LayerFilesTee("test")
    layer = _write(tmp_path, _tar_bytes(), tee)
    assert tee.record(cas, cache, layer.descriptor.digest)
    links: dict[str, str] = {}
    expected = list(layer_files(tmp_path / "blob", "test", links))
    assert len(expected) == 301 and links == {"bin": "usr/bin"}
    assert load_layer_files(cas, cache, layer.descriptor.digest) == (expected, links)


def test_a_tar_left_to_tarfile_or_a_failed_write_records_nothing(tmp_path: Path) -> None:
    cas, cache = _stores(tmp_path)
    tee = LayerFilesTee("test")  # a global PAX header: oci/tar_scan.py leaves it to tarfile
    layer = _write(tmp_path, _tar_bytes({"comment": "global"}, files=3), tee)
    assert not tee.record(cas, cache, layer.descriptor.digest)
    assert load_layer_files(cas, cache, layer.descriptor.digest) is None

    failing = LayerFilesTee("test")

    def broken(out):  # noqa: ANN001, ANN202
        failing.writer(out).write(_tar_bytes(files=60)[:5 << 20])  # half a layer, then fails
        raise OSError("disk gone")

    with pytest.raises(OSError):
        try:
            write_layer(tmp_path / "blob2", "gzip", broken)
        finally:
            failing.close()  # returns: the reading thread ends at the end of what was written
    assert not failing.record(cas, cache, layer.descriptor.digest)


def test_a_record_is_trusted_only_for_the_layer_it_names_and_never_when_tampered(
        tmp_path: Path) -> None:
    cas, cache = _stores(tmp_path)
    tee = LayerFilesTee("test")
    layer = _write(tmp_path, _tar_bytes(files=4), tee)
    blob = layer.descriptor.digest
    assert tee.record(cas, cache, blob)
    kept = load_layer_files(cas, cache, blob)
    assert kept is not None
    # Another layer's facts under this layer's key: not served.
    other = type(blob).parse("sha256:" + "0" * 64)
    from pyimg.actions import layer_record

    key = layer_record._key(blob)
    store_layer_files(cas, cache, other, *kept)
    cache.put(key, cache.get(layer_record._key(other)))  # type: ignore[arg-type]
    assert load_layer_files(cas, cache, blob) is None
    # The right facts again, then their bytes edited in the store: not served.
    store_layer_files(cas, cache, blob, *kept)
    hit = cache.get(key)
    assert hit is not None
    body = cas.path(hit.files["layer_files.json"].digest)
    body.chmod(0o644)
    body.write_bytes(body.read_bytes().replace(b'"srv/', b'"etc/'))
    assert load_layer_files(cas, cache, blob) is None
