"""Safe extraction: every hostile member is refused, naming the archive and the member."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest
import zstandard
from pyimg.core.archive import UnsafeArchiveError, extract_archive


def make_tar(path: Path, members: list[tuple[str, str, bytes | str]], mode: str = "w:gz") -> Path:
    """members: (name, kind, data-or-linkname); kind is file, dir, sym, hard, dev."""
    with tarfile.open(path, mode) as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                assert isinstance(data, bytes)
                info.size = len(data)
                info.mode = 0o755 if name.endswith(".sh") else 0o644
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "sym": tarfile.SYMTYPE,
                "hard": tarfile.LNKTYPE,
                "dev": tarfile.CHRTYPE,
            }[kind]
            if kind in ("sym", "hard"):
                info.linkname = str(data)
            tar.addfile(info)
    return path


def test_tar_gz_with_strip_prefix_and_links(tmp_path: Path) -> None:
    arc = make_tar(
        tmp_path / "a.tar.gz",
        [
            ("pkg-1.0/", "dir", b""),
            ("pkg-1.0/bin/run.sh", "file", b"#!/bin/sh\n"),
            ("pkg-1.0/data.txt", "file", b"data"),
            ("pkg-1.0/link", "sym", "data.txt"),
            ("pkg-1.0/hard", "hard", "pkg-1.0/data.txt"),
        ],
    )
    out = tmp_path / "out"
    assert extract_archive(arc, out, "http://x/a.tar.gz", "pkg-1.0") == 4
    assert (out / "bin/run.sh").stat().st_mode & 0o777 == 0o755
    assert (out / "data.txt").stat().st_mode & 0o777 == 0o644
    assert (out / "link").is_symlink() and (out / "link").read_text() == "data"
    assert (out / "hard").read_text() == "data"


@pytest.mark.parametrize(
    "members, fragment",
    [
        ([("/etc/passwd", "file", b"x")], "'/etc/passwd' has an absolute path"),
        ([("a/../../x", "file", b"x")], "'a/../../x' has a '..' path component"),
        ([("a", "sym", "../../etc/passwd")], "symlink 'a' points outside the archive root"),
        ([("a", "sym", "/etc/passwd")], "symlink 'a' points outside the archive root"),
        ([("f", "file", b"x"), ("a", "hard", "../f")], "'../f' has a '..' path component"),
        ([("a", "hard", "missing")], "hard link 'a' points at 'missing'"),
        ([("dev/null", "dev", b"")], "member 'dev/null' is a device"),
        ([("f", "file", b"1"), ("./f", "file", b"2")], "duplicate entry './f'"),
    ],
)
def test_hostile_tar_members(tmp_path: Path, members, fragment: str) -> None:
    arc = make_tar(tmp_path / "evil.tar", members, mode="w")
    out = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError) as e:
        extract_archive(arc, out, "http://x/evil.tar")
    assert "archive http://x/evil.tar" in str(e.value)
    assert fragment in str(e.value)
    assert not out.exists()  # nothing partial is left behind


def test_write_through_symlinked_directory_is_refused(tmp_path: Path) -> None:
    arc = make_tar(tmp_path / "evil.tar", [("d", "sym", "."), ("d/x", "file", b"x")], mode="w")
    # The symlink is in-root, but links are created last, so `d/x` lands in a real directory.
    out = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match="link 'd' conflicts with another entry"):
        extract_archive(arc, out, "evil.tar")


def test_strip_prefix_matching_nothing(tmp_path: Path) -> None:
    arc = make_tar(tmp_path / "a.tar.gz", [("pkg/x", "file", b"x")])
    with pytest.raises(UnsafeArchiveError, match="strip_prefix 'nope' matches no entry"):
        extract_archive(arc, tmp_path / "out", "a.tar.gz", "nope")


def test_tar_zst(tmp_path: Path) -> None:
    raw = make_tar(tmp_path / "a.tar", [("x.txt", "file", b"zst")], mode="w")
    zst = tmp_path / "a.tar.zst"
    zst.write_bytes(zstandard.ZstdCompressor().compress(raw.read_bytes()))
    extract_archive(zst, tmp_path / "out", "a.tar.zst")
    assert (tmp_path / "out/x.txt").read_bytes() == b"zst"


def test_zip_and_hostile_zip(tmp_path: Path) -> None:
    good = tmp_path / "a.zip"
    with zipfile.ZipFile(good, "w") as z:
        z.writestr("top/a.txt", "a")
        info = zipfile.ZipInfo("top/run.sh")
        info.external_attr = 0o100755 << 16
        z.writestr(info, "#!/bin/sh\n")
    extract_archive(good, tmp_path / "out", "a.zip", "top")
    assert (tmp_path / "out/a.txt").read_text() == "a"
    assert (tmp_path / "out/run.sh").stat().st_mode & 0o111
    for name, fragment in (("../x", "'..' path component"), ("/abs", "absolute path")):
        bad = tmp_path / "bad.zip"
        with zipfile.ZipFile(bad, "w") as z:
            z.writestr(name, "x")
        with pytest.raises(UnsafeArchiveError, match=fragment):
            extract_archive(bad, tmp_path / "bad-out", "bad.zip")
    link = tmp_path / "link.zip"
    with zipfile.ZipFile(link, "w") as z:
        info = zipfile.ZipInfo("l")
        info.external_attr = 0o120777 << 16
        z.writestr(info, "../../etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="symlink 'l' points outside"):
        extract_archive(link, tmp_path / "link-out", "link.zip")


def _zeros_zip(path: Path, files: int, size: int) -> Path:
    """A small zip bomb: `files` members of `size` zero bytes each, compressed to almost nothing."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(files):
            with z.open(f"zeros/{i}.bin", "w") as f:
                for _ in range(size >> 20):
                    f.write(bytes(1 << 20))
    return path


def test_an_archive_unpacking_past_the_size_limit_is_refused(tmp_path: Path) -> None:
    bomb = _zeros_zip(tmp_path / "bomb.zip", 1, 64 << 20)
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(UnsafeArchiveError, match=r"unpacks to more than 16,777,216 bytes.*max_unpacked_bytes"):
        extract_archive(bomb, tmp_path / "out", "bomb.zip", max_bytes=16 << 20)
    assert not (tmp_path / "out").exists()  # nothing half-unpacked is left
    tar = tmp_path / "bomb.tar.gz"
    with tarfile.open(tar, "w:gz") as t:
        info = tarfile.TarInfo("zeros.bin")
        info.size = 64 << 20
        t.addfile(info, io.BytesIO(bytes(info.size)))
    with pytest.raises(UnsafeArchiveError, match="unpacks to more than"):
        extract_archive(tar, tmp_path / "out", "bomb.tar.gz", max_bytes=16 << 20)
    assert extract_archive(tar, tmp_path / "out", "bomb.tar.gz", max_bytes=64 << 20) == 1


def test_an_archive_with_too_many_entries_is_refused(tmp_path: Path) -> None:
    many = make_tar(tmp_path / "many.tar.gz", [(f"f{i}", "file", b"") for i in range(101)])
    with pytest.raises(UnsafeArchiveError, match=r"more than 100 entries.*max_unpacked_files"):
        extract_archive(many, tmp_path / "out", "many.tar.gz", max_files=100)
    assert not (tmp_path / "out").exists()
    assert extract_archive(many, tmp_path / "out", "many.tar.gz", max_files=101) == 101
