"""oci/tar_scan.py: the members and digests it reads are tarfile's, in every format pyimg
accepts, across chunk boundaries; what it leaves to tarfile, and damaged archives."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

import pytest
import zstandard
from pyimg.errors import UserInputError
from pyimg.oci import tar_scan
from pyimg.oci.tar_scan import UnsupportedTar, scan_tar


def _archive(fmt: int) -> bytes:
    """Every member kind, with names and targets that need the format's long-name forms."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        def add(name: str, kind: bytes, data: bytes = b"", link: str = "", mode: int = 0o644,
                uid: int = 0) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mode, info.uid, info.size = kind, link, mode, uid, len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)

        long_dir = "d" * 120
        add("./etc", tarfile.DIRTYPE, mode=0o755)
        add("./etc/hostname", tarfile.REGTYPE, b"box\n")
        add(f"./{long_dir}/{'f' * 150}", tarfile.REGTYPE, bytes(range(256)) * 9000, mode=0o4755,
            uid=1000)
        add(f"./{long_dir}/short", tarfile.REGTYPE, b"")
        add("./hard", tarfile.LNKTYPE, link=f"./{long_dir}/{'f' * 150}")
        add("./link", tarfile.SYMTYPE, link="/" + "t" * 140)
        add("./fifo", tarfile.FIFOTYPE)
        add("./caf\u00e9", tarfile.REGTYPE, "\u00e9".encode())
        for i in range(300):  # headers that straddle small chunks
            add(f"./many/{i:04d}", tarfile.REGTYPE, b"x" * (i * 7))
    return buf.getvalue()


def _tarfile_view(data: bytes) -> list[tuple[object, ...]]:
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        for m in tar:
            digest = None
            if m.isreg():
                f = tar.extractfile(m)
                assert f is not None
                digest = hashlib.sha256(f.read()).hexdigest()
            out.append((m.name, m.linkname, m.mode, m.uid, m.gid, m.isreg(), m.islnk(),
                        m.issym(), digest))
    return out


def _scan_view(data: bytes) -> list[tuple[object, ...]]:
    return [(m.name, m.linkname, m.mode, m.uid, m.gid, m.kind == "file", m.kind == "hardlink",
             m.kind == "symlink", m.digests["sha256"] if m.digests else None)
            for m in scan_tar(io.BytesIO(data), "test")]


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
@pytest.mark.parametrize("compress", ["none", "gzip", "zstd"])
def test_members_are_those_tarfile_reads(fmt: int, compress: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    data = _ustar_archive() if fmt == tarfile.USTAR_FORMAT else _archive(fmt)
    packed = {"none": data, "gzip": gzip.compress(data, mtime=0),
              "zstd": zstandard.ZstdCompressor().compress(data)}[compress]
    expected = _tarfile_view(data)
    assert _scan_view(packed) == expected
    monkeypatch.setattr(tar_scan, "_CHUNK", 1000)  # chunks that split headers and contents
    assert _scan_view(packed) == expected


def _ustar_archive() -> bytes:
    """ustar's prefix field: a name of 150 characters split at a slash."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("./" + "p" * 120 + "/name")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    return buf.getvalue()


def test_digests_in_each_algorithm_asked() -> None:
    (member,) = [m for m in scan_tar(io.BytesIO(_ustar_archive()), "t", ("sha256", "sha1"))]
    assert member.digests == {"sha256": hashlib.sha256(b"abc").hexdigest(),
                              "sha1": hashlib.sha1(b"abc").hexdigest()}


def test_forms_left_to_tarfile_raise_unsupported() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"comment": "global"}) as tar:
        tar.addfile(tarfile.TarInfo("a"), None)
    with pytest.raises(UnsupportedTar):
        list(scan_tar(io.BytesIO(buf.getvalue()), "t"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("sparse")
        info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0"}
        tar.addfile(info, None)
    with pytest.raises(UnsupportedTar):
        list(scan_tar(io.BytesIO(buf.getvalue()), "t"))


def test_damaged_archives_are_user_errors(tmp_path: Path) -> None:
    data = _archive(tarfile.PAX_FORMAT)
    with pytest.raises(UserInputError, match="layer x: not a readable layer"):
        list(scan_tar(io.BytesIO(data[:5000]), "layer x"))  # cut inside a member
    bad = bytearray(data)
    bad[0] ^= 0x01  # the first header's checksum no longer holds
    with pytest.raises(UserInputError, match="bad checksum"):
        list(scan_tar(io.BytesIO(bytes(bad)), "layer x"))
    with pytest.raises(UserInputError, match="not a readable layer"):
        list(scan_tar(io.BytesIO(gzip.compress(data)[:-100]), "layer x"))


def test_stopping_early_stops_the_decompressing_thread() -> None:
    members = scan_tar(io.BytesIO(gzip.compress(_archive(tarfile.PAX_FORMAT))), "t")
    next(members)
    members.close()  # the generator's finally joins the thread; a hang would fail the run
