"""oci/deb.py: `.deb`s decoded once into the repository cache, never served when corrupt."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path

import pytest
from debian_fixtures import make_deb
from pyimg.core.cas import ContentStore
from pyimg.core.digest import Digest
from pyimg.oci.deb import DebCache, UnpackedDeb, read_deb
from pyimg.oci.tar import write_tar

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")


def _deb(tmp_path: Path) -> tuple[Path, Digest]:
    deb = make_deb(
        tmp_path / "debs", "tool",
        {"usr/bin/tool": (b"#!/bin/sh\necho tool\n", 0o755), "etc/tool.conf": b"x = 1\n" * 500},
        symlinks={"usr/bin/t": "tool"}, hardlinks={"usr/bin/tool2": "usr/bin/tool"},
        dirs={"var/cache/tool": 0o700}, arch="arm64",
    )
    return deb, Digest("sha256", hashlib.sha256(deb.read_bytes()).hexdigest())


def _layer(package: UnpackedDeb) -> bytes:
    out = io.BytesIO()
    write_tar(out, package.entries, mtime=0)
    return out.getvalue()


def _fresh(tmp_path: Path, deb: Path) -> bytes:
    scratch = tmp_path / "scratch"
    scratch.mkdir(exist_ok=True)
    return _layer(read_deb(deb, scratch, "tool.deb"))


def test_a_decoded_entry_gives_the_bytes_of_a_fresh_decode(tmp_path: Path) -> None:
    deb, digest = _deb(tmp_path)
    cache = DebCache(ContentStore(tmp_path / "cache"))
    first = cache.read(deb, digest, "tool.deb")
    assert (first.name, first.architecture) == ("tool", "arm64")
    assert first.control.startswith(b"Package: tool\n") and first.md5sums
    assert cache.entry_path(digest).is_file()
    # Served from the entry: the .deb is not read again (here it is gone).
    expected = _fresh(tmp_path, deb)
    moved = deb.rename(tmp_path / "elsewhere.deb")
    again = cache.read(deb, digest, "tool.deb")
    assert again == first
    assert _layer(first) == _layer(again) == expected
    moved.rename(deb)


def _entry(cache: DebCache, digest: Digest) -> dict[str, object]:
    return json.loads(cache.entry_path(digest).read_bytes())  # type: ignore[no-any-return]


def _data_blob(cache: DebCache, digest: Digest) -> Path:
    body = _entry(cache, digest)["body"]
    assert isinstance(body, dict)
    return cache.cas.path(Digest("sha256", body["data"]))


@pytest.mark.parametrize("damage", ["truncated", "same_size", "entry_edited", "entry_cut",
                                    "blob_gone"])
def test_a_damaged_entry_is_decoded_again_never_served(tmp_path: Path, damage: str) -> None:
    deb, digest = _deb(tmp_path)
    cache = DebCache(ContentStore(tmp_path / "cache"))
    expected = _layer(cache.read(deb, digest, "tool.deb"))
    blob, entry = _data_blob(cache, digest), cache.entry_path(digest)
    if damage in ("truncated", "same_size"):
        os.chmod(blob, 0o644)
        data = blob.read_bytes()
        data = data[:-1024] if damage == "truncated" else data.replace(b"echo tool", b"echo evil")
        blob.write_bytes(data)
    elif damage == "entry_edited":
        entry.write_bytes(entry.read_bytes().replace(b'"usr/bin/tool"', b'"usr/bin/evil"'))
    elif damage == "entry_cut":
        entry.write_bytes(entry.read_bytes()[:100])
    else:
        blob.unlink()
    # A new process's view: nothing remembered from the decode above.
    cache = DebCache(ContentStore(tmp_path / "cache"))
    assert _layer(cache.read(deb, digest, "tool.deb")) == expected
    # ...and the entry is whole again: served with the .deb gone.
    deb.unlink()
    assert _layer(DebCache(ContentStore(tmp_path / "cache")).read(deb, digest, "x")) == expected


def test_cache_verify_drops_entries_that_do_not_hold(tmp_path: Path) -> None:
    deb, digest = _deb(tmp_path)
    other = make_deb(tmp_path / "debs", "other", {"etc/other": b"o"})
    other_digest = Digest("sha256", hashlib.sha256(other.read_bytes()).hexdigest())
    cas = ContentStore(tmp_path / "cache")
    cache = DebCache(cas)
    cache.read(deb, digest, "tool.deb")
    cache.read(other, other_digest, "other.deb")
    assert cache.verify_all() == (2, [])
    entry = cache.entry_path(digest)
    entry.write_bytes(entry.read_bytes().replace(b'"tool"', b'"evil"'))
    _data_blob(cache, other_digest).unlink()
    checked, dropped = cache.verify_all()
    assert checked == 2
    assert dropped == [
        (f"debs/{other_digest.hex}.json", "names a data blob that is not in the store"),
        (f"debs/{digest.hex}.json", "its checksum or format does not hold"),
    ] or dropped == [
        (f"debs/{digest.hex}.json", "its checksum or format does not hold"),
        (f"debs/{other_digest.hex}.json", "names a data blob that is not in the store"),
    ]
    assert not entry.exists() and not cache.entry_path(other_digest).exists()


def test_a_decode_that_fails_leaves_no_entry_and_no_scratch(tmp_path: Path) -> None:
    # The entry is written last, atomically: a package that fails half-way through leaves the
    # cache as it was, and the error names the package.
    from pyimg.errors import UserInputError

    deb, _ = _deb(tmp_path)
    cut = tmp_path / "cut.deb"
    cut.write_bytes(deb.read_bytes()[:-200])
    digest = Digest("sha256", hashlib.sha256(cut.read_bytes()).hexdigest())
    cache = DebCache(ContentStore(tmp_path / "cache"))
    with pytest.raises(UserInputError, match=r"cut\.deb: data\.tar\.xz is truncated"):
        cache.read(cut, digest, "cut.deb")
    assert not cache.entry_path(digest).exists()
    assert list(cache.dir.iterdir()) == []
