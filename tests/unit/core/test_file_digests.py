"""The file-digest cache: a log of changes on top of the file, and lazy reading."""

from __future__ import annotations

import os

from pyimg.core.digest import digest_bytes
from pyimg.core.file_digests import SMALL, FileDigestCache, stat_key


def _files(tmp_path, n=3):
    out = []
    for i in range(n):
        f = tmp_path / f"f{i}"
        f.write_text(f"content {i}")
        out.append(f)
    return out


def test_appended_changes_read_back_and_compact_folds_them_in(tmp_path):
    path = tmp_path / "digests.json"
    a, b, c = _files(tmp_path)
    cache = FileDigestCache(path)
    cache.digest(a)
    cache.save()
    lazy = FileDigestCache(path, lazy=True)
    lazy.digest(b)
    lazy.put("/blob", (1, 2, 3, 0))
    lazy.append()
    assert path.with_suffix(".log").exists() and lazy.hashed == 1
    again = FileDigestCache(path)
    assert [again.digest(f)[0] for f in (a, b)] == [digest_bytes(b"content 0"),
                                                   digest_bytes(b"content 1")]
    assert again.hashed == 0 and again.get("/blob") == (1, 2, 3, 0)
    again.pop("/blob")
    again.digest(c)
    again.compact()
    assert not path.with_suffix(".log").exists()
    final = FileDigestCache(path)
    assert final.get("/blob") is None
    assert all(final.get(str(f)) == stat_key(f.stat()) for f in (a, b, c))


def test_save_appends_a_few_changes_without_reading_or_rewriting_the_file(tmp_path):
    path = tmp_path / "digests.json"
    for i in range(100):
        (tmp_path / f"g{i}").write_text(f"g {i}")
    cache = FileDigestCache(path)
    for i in range(100):
        cache.digest(tmp_path / f"g{i}")
    cache.compact()
    written = path.read_bytes()
    a, b, _ = _files(tmp_path)
    lazy = FileDigestCache(path, lazy=True)
    lazy.digest(a)
    lazy.pop(str(tmp_path / "g0"))
    lazy.save()
    assert path.read_bytes() == written  # the few changes went to the log only
    assert len(path.with_suffix(".log").read_bytes().splitlines()) == 2
    uncompacted = FileDigestCache(path)
    files = [f for f in tmp_path.iterdir() if not f.name.startswith("digests")]
    entries = {str(f): uncompacted.get(str(f)) for f in files}
    assert entries[str(tmp_path / "g0")] is None and entries[str(a)] == stat_key(a.stat())
    uncompacted.digest(b)
    uncompacted.compact()
    compacted = FileDigestCache(path)
    assert {str(f): compacted.get(str(f)) for f in files} == {
        **entries, str(b): stat_key(b.stat())}
    assert compacted.hashed == 0 and not path.with_suffix(".log").exists()


def test_a_save_after_a_torn_line_keeps_every_line_it_adds(tmp_path):
    path = tmp_path / "digests.json"
    cache = FileDigestCache(path)
    cache.put("/x", (1, 1, 1, 0))
    cache.save()
    with open(path.with_suffix(".log"), "ab") as log:
        log.write(b'["/y", [9, 9')  # a crash in the middle of an append
    later = FileDigestCache(path)
    later.put("/z", (3, 3, 3, 0))
    later.save()
    again = FileDigestCache(path)
    assert again.get("/x") == (1, 1, 1, 0) and again.get("/z") == (3, 3, 3, 0)
    assert again.get("/y") is None


def test_removal_in_the_log_and_a_torn_line(tmp_path):
    path = tmp_path / "digests.json"
    cache = FileDigestCache(path)
    cache.put("/x", (1, 1, 1, 0))
    cache.put("/y", (2, 2, 2, 0))
    cache.save()
    lazy = FileDigestCache(path, lazy=True)
    lazy.pop("/x")
    lazy.append()
    with open(path.with_suffix(".log"), "ab") as log:
        log.write(b'["/y", [9, 9')  # a crash in the middle of an append
    again = FileDigestCache(path)
    assert again.get("/x") is None and again.get("/y") == (2, 2, 2, 0)


def test_lazy_cache_reads_its_file_only_for_a_large_file(tmp_path):
    path = tmp_path / "digests.json"
    small, = _files(tmp_path, 1)
    large = tmp_path / "large"
    large.write_bytes(b"x" * SMALL)
    cache = FileDigestCache(path)
    cache.digest(small)
    cache.digest(large)
    cache.save()
    lazy = FileDigestCache(path, lazy=True)
    lazy.digest(small)
    assert lazy.hashed == 1  # hashed again, the file unread: cheaper
    lazy.digest(large)
    assert lazy.hashed == 1  # its entry read from the file instead of hashing 1 MiB


def test_remembered_entries_spare_reading_and_are_not_written(tmp_path):
    path = tmp_path / "digests.json"
    f, = _files(tmp_path, 1)
    lazy = FileDigestCache(path, lazy=True)
    lazy.remember(str(f), stat_key(f.stat()), digest_bytes(b"content 0"))
    assert lazy.digest(f)[0] == digest_bytes(b"content 0") and lazy.hashed == 0
    lazy.append()
    assert not path.with_suffix(".log").exists()
    # A stale one is not trusted.
    st = f.stat()
    f.write_text("content X")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert lazy.digest(f)[0] == digest_bytes(b"content X")
