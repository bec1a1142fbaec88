"""The canonical tar writer: order, parents, owners, modes, times, links, names, whiteouts, errors."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest
import zstandard
from pyimg.errors import UserInputError
from pyimg.oci.tar import TarEntry, entries_from_tar, opaque_whiteout, whiteout, write_tar


def _tar(entries: list[TarEntry], **kw: int) -> bytes:
    buf = io.BytesIO()
    n = write_tar(buf, entries, **kw)
    assert n == len(buf.getvalue())
    return buf.getvalue()


def _members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return tf.getmembers()


def test_sorted_parents_owner_mtime_modes(tmp_path: Path) -> None:
    exe = tmp_path / "exe"
    exe.write_bytes(b"#!/bin/sh\n")
    data = _tar(
        [
            TarEntry("b/z.txt", data=b"z"),
            TarEntry("a-b", data=b"x"),
            TarEntry("b/bin/exe", src=exe, executable=True),
            TarEntry("a/x", data=b"y", mode=0o600),
        ],
        mtime=1234,
        uid=10,
        gid=20,
    )
    ms = _members(data)
    assert [m.name for m in ms] == ["a", "a-b", "a/x", "b", "b/bin", "b/bin/exe", "b/z.txt"]
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in ms} == {(10, 20, "", "", 1234)}
    modes = {m.name: m.mode for m in ms}
    assert modes == {
        "a": 0o755,
        "a-b": 0o644,
        "a/x": 0o600,
        "b": 0o755,
        "b/bin": 0o755,
        "b/bin/exe": 0o755,
        "b/z.txt": 0o644,
    }
    assert all(m.isdir() for m in ms if m.name in ("a", "b", "b/bin"))
    # Two zero blocks end the archive, and no record padding follows.
    assert data.endswith(b"\0" * 1024) and len(data) % 512 == 0


def test_directory_names_carry_trailing_slash_in_headers() -> None:
    data = _tar([TarEntry("d", "dir")])
    assert data[:2] == b"d/"


def test_long_and_non_ascii_names_use_pax_path_records_only() -> None:
    long = "d/" + "x" * 150
    data = _tar(
        [
            TarEntry(long, data=b"1"),
            TarEntry("ünïcode/файл", data=b"2"),
            TarEntry("lnk", "symlink", target="/" + "t" * 120),
        ]
    )
    ms = _members(data)
    names = [m.name for m in ms]
    assert long in names and "ünïcode/файл" in names
    assert {m.name: m.linkname for m in ms}["lnk"] == "/" + "t" * 120
    # Every PAX header holds only path/linkpath records: no atime, ctime or mtime.
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        for m in tf:
            assert set(m.pax_headers) <= {"path", "linkpath"}, m.pax_headers
    assert b"atime" not in data and b"ctime" not in data and b"mtime=" not in data


def test_symlinks_hardlinks_and_link_order(tmp_path: Path) -> None:
    data = _tar(
        [
            TarEntry("z/real", data=b"content"),
            # declared pointing at z/real, but sorts first: it must hold the content
            TarEntry("a/link", "hardlink", target="z/real"),
            TarEntry("m/link2", "hardlink", target="a/link"),
            TarEntry("s", "symlink", target="../etc/passwd"),
        ]
    )
    ms = {m.name: m for m in _members(data)}
    assert ms["a/link"].isreg() and ms["a/link"].size == 7
    assert ms["z/real"].islnk() and ms["z/real"].linkname == "a/link"
    assert ms["m/link2"].islnk() and ms["m/link2"].linkname == "a/link"
    assert ms["s"].issym() and ms["s"].linkname == "../etc/passwd" and ms["s"].mode == 0o777
    # It extracts: the content precedes the links.
    out = tmp_path / "x"
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        tf.extractall(out, filter="tar")
    assert (out / "z/real").read_bytes() == b"content"
    assert (out / "z/real").stat().st_ino == (out / "a/link").stat().st_ino


def test_whiteouts_and_empty_dirs() -> None:
    ms = _members(
        _tar([whiteout("etc/passwd"), opaque_whiteout("var/cache"), TarEntry("empty", "dir")])
    )
    names = {m.name: m for m in ms}
    assert "etc/.wh.passwd" in names and names["etc/.wh.passwd"].size == 0
    assert "var/cache/.wh..wh..opq" in names
    assert names["empty"].isdir()


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([TarEntry("a", data=b""), TarEntry("./a", data=b"")], "duplicate path in layer: 'a'"),
        ([TarEntry("/etc/x", data=b"")], "absolute path"),
        ([TarEntry("a/../../x", data=b"")], "'..'"),
        ([TarEntry("f", data=b""), TarEntry("f/g", data=b"")], "'f' is a file"),
        ([TarEntry("l", "hardlink", target="nope")], "target 'nope' is not in the layer"),
        ([TarEntry("d", "dir"), TarEntry("l", "hardlink", target="d")], "is a dir"),
        ([TarEntry("s", "symlink")], "symlink without a target"),
        ([TarEntry("a", "dir", mode=0o700), TarEntry("a", "dir")], "duplicate path"),
    ],
)
def test_bad_entries(entries: list[TarEntry], message: str) -> None:
    with pytest.raises(UserInputError, match=message.replace("(", r"\(").replace(".", r"\.")):
        _tar(entries)


def test_identical_directories_merge() -> None:
    ms = _members(_tar([TarEntry("a", "dir"), TarEntry("a", "dir", mode=0o755, uid=0, gid=0)]))
    assert [m.name for m in ms] == ["a"]


def test_bad_mtime() -> None:
    with pytest.raises(UserInputError, match="mtime"):
        _tar([TarEntry("a", data=b"")], mtime=-1)


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_entries_from_tar_round_trip(tmp_path: Path, compression: str) -> None:
    original = _tar(
        [
            TarEntry("a/f", data=b"hello", mode=0o640, uid=5, gid=6),
            TarEntry("a/l", "symlink", target="f"),
            TarEntry("a/h", "hardlink", target="a/f"),
        ]
    )
    if compression == "gzip":
        payload = gzip.compress(original)
    elif compression == "zstd":
        payload = zstandard.ZstdCompressor().compress(original)
    else:
        payload = original
    src = tmp_path / "in.tar"
    src.write_bytes(payload)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    again = _tar(entries_from_tar(src, scratch))
    assert again == original


def test_entries_from_tar_rejects_devices(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("dev/null")
        info.type = tarfile.CHRTYPE
        tf.addfile(info)
    src = tmp_path / "dev.tar"
    src.write_bytes(buf.getvalue())
    with pytest.raises(UserInputError, match="dev/null"):
        entries_from_tar(src, tmp_path)


def test_source_that_shrinks_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    with pytest.raises(UserInputError, match="shrank"):
        _tar([TarEntry("f", src=f, size=10)])
