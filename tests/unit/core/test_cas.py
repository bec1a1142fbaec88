import os

import pytest
from pyimg.core.action_cache import ActionCache, ActionResult, FileOutput
from pyimg.core.cas import ContentStore
from pyimg.core.digest import digest_bytes
from pyimg.core.file_digests import FileDigestCache


def test_put_and_verify(tmp_path):
    cas = ContentStore(tmp_path)
    d = cas.put_bytes(b"hello")
    assert d == digest_bytes(b"hello")
    assert cas.read_bytes(d) == b"hello"
    assert not os.access(cas.path(d), os.W_OK) or os.getuid() == 0
    assert oct(cas.path(d).stat().st_mode & 0o777) == "0o444"


def test_executable_variant_is_separate(tmp_path):
    cas = ContentStore(tmp_path)
    d = cas.put_bytes(b"#!/bin/sh\n", executable=True)
    cas.put_bytes(b"#!/bin/sh\n")
    assert cas.path(d, True) != cas.path(d)
    assert cas.path(d, True).stat().st_mode & 0o111
    assert not cas.path(d).stat().st_mode & 0o111


def test_corrupt_blob_is_dropped_never_served(tmp_path):
    cas = ContentStore(tmp_path)
    d = cas.put_bytes(b"payload")
    path = cas.path(d)
    path.chmod(0o644)
    path.write_bytes(b"tampered")
    assert not cas.verify(d)
    assert not path.exists()


def test_put_file_hashes_while_copying(tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"abc" * 1000)
    cas = ContentStore(tmp_path / "c")
    d, executable = cas.put_file(src)
    assert d == digest_bytes(b"abc" * 1000) and not executable
    # The user's file keeps its mode: sources are copied, not linked.
    assert src.stat().st_mode & 0o200


def test_action_cache_round_trip_and_corruption(tmp_path):
    cas = ContentStore(tmp_path)
    cache = ActionCache(tmp_path, cas)
    d = cas.put_bytes(b"out")
    key = digest_bytes(b"key")
    result = ActionResult({"pyimg-out/a": FileOutput(d, 3, False)}, {})
    cache.put(key, result)
    assert cache.get(key) == result
    # An entry whose blob vanished is dropped.
    cas.path(d).unlink()
    assert cache.get(key) is None
    # A garbled entry is dropped too.
    cache.put(key, result)
    entry = tmp_path / "ac" / key.hex[:2] / key.hex
    entry.write_bytes(b"{not json")
    assert cache.get(key) is None and not entry.exists()


def test_file_digest_cache_rehashes_only_on_change(tmp_path):
    f = tmp_path / "f"
    f.write_text("one")
    cache = FileDigestCache(tmp_path / "digests.json")
    d1, _ = cache.digest(f)
    cache.digest(f)
    assert cache.hashed == 1
    cache.save()
    again = FileDigestCache(tmp_path / "digests.json")
    assert again.digest(f)[0] == d1 and again.hashed == 0
    st = f.stat()
    f.write_text("two")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime: ctime still changes
    assert again.digest(f)[0] != d1


def test_copy_to_is_a_private_copy_with_the_blobs_mode_and_mtime(tmp_path):
    cas = ContentStore(tmp_path)
    for executable in (False, True):
        digest = cas.put_bytes(b"payload " * 100_000, executable)
        blob = cas.path(digest, executable)
        dest = tmp_path / f"copy-{executable}"
        cas.copy_to(digest, dest, executable)
        st, bst = dest.stat(), blob.stat()
        assert dest.read_bytes() == blob.read_bytes()
        assert (st.st_mode, st.st_mtime_ns) == (bst.st_mode, bst.st_mtime_ns)
        assert st.st_ino != bst.st_ino
        dest.chmod(0o644)
        dest.write_bytes(b"changed")
        assert cas.path(digest, executable).stat().st_mode == bst.st_mode
        assert cas.verify(digest, executable)


def test_a_full_disk_is_a_clear_error_and_leaves_no_partial_blob(tmp_path, monkeypatch):
    import errno

    from pyimg.core.errors import DiskFullError

    store = ContentStore(tmp_path / "cache")
    real_fsync = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(DiskFullError, match=f"no space left on {tmp_path / 'cache'}"):
        store.put_bytes(b"payload")
    src = tmp_path / "src.bin"
    src.write_bytes(b"from a file")
    with pytest.raises(DiskFullError):
        store.put_file(src)
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]

    monkeypatch.setattr(os, "fsync", real_fsync)  # space freed: the store works as before
    digest = store.put_bytes(b"payload")
    assert store.read_bytes(digest) == b"payload"
