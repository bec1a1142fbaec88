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

    from pyimg.errors import DiskFullError

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


def _rot(path, offset=0):
    """Flip one byte of a blob in place and give it back its mode and mtime: its stat (size,
    mtime, inode) is the one last verified, as when a disk rots bytes under the file system."""
    st = path.stat()
    path.chmod(0o644)
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 1]))
    path.chmod(st.st_mode & 0o7777)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_rot_under_an_unchanged_stat_passes_verify_but_not_recheck(tmp_path):
    cas = ContentStore(tmp_path)
    d = cas.put_bytes(b"payload")
    out = tmp_path / "out"
    cas.link_to(d, out)  # a hard link elsewhere (pyimg-out/) to the same bytes
    _rot(cas.path(d))
    assert cas.verify(d)  # the stat is the one verified: the cheap check cannot tell
    assert not cas.recheck(d)
    assert not cas.path(d).exists()
    assert out.stat().st_size == 0  # emptied, so that stat checks on every link see a change


def test_recheck_trusts_a_blob_this_store_wrote_only_when_asked(tmp_path):
    cas = ContentStore(tmp_path)
    d = cas.put_bytes(b"payload")
    _rot(cas.path(d))
    assert cas.recheck(d, trust_fresh=True)  # hashed as it was written, by this process
    assert not ContentStore(tmp_path).recheck(d, trust_fresh=True)  # another process reads it


def test_verify_all_drops_rotten_misnamed_and_mode_flipped_blobs(tmp_path):
    cas = ContentStore(tmp_path)
    good = cas.put_bytes(b"good")
    rotten = cas.put_bytes(b"rotten")
    flipped = cas.put_bytes(b"flipped")
    _rot(cas.path(rotten))
    cas.path(flipped).chmod(0o555)  # an action made a shared input executable
    (cas.path(good).parent / "junk").write_bytes(b"x")
    (tmp_path / "cas/sha256/.tmp-writer").write_bytes(b"half")  # a writer at work: left alone

    check = ContentStore(tmp_path).verify_all(jobs=2)

    assert check.blobs == 3
    assert {rel.rsplit("/", 1)[1]: why for rel, why in check.dropped} == {
        rotten.hex: "bytes do not match the digest",
        flipped.hex: "mode 0555, not 0444",
        "junk": "not a blob name",
    }
    assert cas.verify(good) and not cas.path(rotten).exists() and not cas.path(flipped).exists()
    assert (tmp_path / "cas/sha256/.tmp-writer").exists()
    st = cas.path(good).stat()
    assert check.good == {(st.st_dev, st.st_ino): good}
    assert ContentStore(tmp_path).verify_all().dropped == []


def test_action_cache_verify_all_drops_entries_that_are_corrupt_or_name_dropped_blobs(tmp_path):
    cas = ContentStore(tmp_path)
    ac = ActionCache(tmp_path, cas)
    kept, dangling, broken = (digest_bytes(k) for k in (b"kept", b"dangling", b"broken"))
    blob = cas.put_bytes(b"output")
    gone = cas.put_bytes(b"gone")
    ac.put(kept, ActionResult({"o": FileOutput(blob, 6, False)}, {}))
    ac.put(dangling, ActionResult({"o": FileOutput(blob, 6, False)},
                                  {"d": {"f": FileOutput(gone, 4, False)}}))
    ac.put(broken, ActionResult({"o": FileOutput(blob, 6, False)}, {}))
    _rot(cas.path(gone))
    entry = tmp_path / "ac" / broken.hex[:2] / broken.hex
    entry.write_bytes(entry.read_bytes().replace(b"output", b"0utput")[:-1] + b" ")

    dropped_blobs = cas.verify_all().dropped
    entries, dropped = ac.verify_all()

    assert [rel.rsplit("/", 1)[1] for rel, _ in dropped_blobs] == [gone.hex]
    assert entries == 3
    assert {rel.rsplit("/", 1)[1]: why.split(",")[0] for rel, why in dropped} == {
        dangling.hex: "names 1 blob(s) the store does not hold",
        broken.hex: "its bytes do not match its check line",
    }
    assert ac.get(kept) is not None and ac.get(dangling) is None
    assert ac.verify_all() == (1, [])


def test_verify_trees_removes_a_tree_that_linked_a_dropped_blob(tmp_path):
    from pyimg.core.executor import tree_digest, verify_trees

    cas = ContentStore(tmp_path)
    trees = {}
    for name, content in (("kept", b"kept bytes"), ("rotten", b"rotten bytes")):
        tree = {"blobs/f": FileOutput(cas.put_bytes(content), len(content), False)}
        hexd = tree_digest(tree).split(":")[1]
        cas.link_to(tree["blobs/f"].digest, tmp_path / "trees" / hexd[:2] / hexd / "blobs/f")
        trees[name] = f"{hexd[:2]}/{hexd}"
    _rot(tmp_path / "trees" / trees["rotten"] / "blobs/f")

    check = cas.verify_all()
    assert len(check.dropped) == 1
    assert verify_trees(tmp_path / "trees", check.good) == [trees["rotten"]]
    assert (tmp_path / "trees" / trees["kept"] / "blobs/f").read_bytes() == b"kept bytes"


def test_an_output_of_unknown_digest_is_hashed_and_linked_in_not_copied(tmp_path):
    cas = ContentStore(tmp_path / "cache")
    out = tmp_path / "scratch" / "out.txt"
    out.parent.mkdir()
    out.write_bytes(b"made by a command\n")
    digest, executable = cas.put_file(out, link=True)
    assert digest == digest_bytes(b"made by a command\n") and not executable
    blob = cas.path(digest)
    assert os.stat(blob).st_ino == os.stat(out).st_ino  # one inode: no second write of the bytes
    assert os.stat(blob).st_mode & 0o777 == 0o444
    assert cas.verify(digest)


def test_deferred_syncs_skip_the_fsync_of_each_blob_until_sync(tmp_path, monkeypatch):
    import pyimg.core.cas as cas_module

    fsyncs = []
    real = cas_module.os.fsync
    monkeypatch.setattr(cas_module.os, "fsync", lambda fd: (fsyncs.append(fd), real(fd)))
    cas = ContentStore(tmp_path / "cache")
    with cas.deferred_syncs():
        cas.put_bytes(b"deferred")
        src = tmp_path / "src"
        src.write_bytes(b"copied in")
        cas.put_file(src)
        assert fsyncs == []
        cas.sync()  # one syncfs for all of them
    cas.put_bytes(b"durable at once")
    assert len(fsyncs) == 1


def test_remove_tree_removes_unreadable_and_read_only_directories(tmp_path):
    # Permissions stop only a user other than root: tools/test-unprivileged runs this as one.
    from pyimg.core.cas import remove_tree

    top = tmp_path / "scratch"
    (top / "closed/deeper").mkdir(parents=True)
    (top / "closed/deeper/f").write_text("x")
    (top / "read-only").mkdir()
    (top / "read-only/g").write_text("y")
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o750)
    outside.chmod(0o750)
    os.symlink(outside, top / "link")
    (top / "closed/deeper").chmod(0)
    (top / "closed").chmod(0)
    (top / "read-only").chmod(0o555)
    remove_tree(top)
    assert not top.exists()
    assert outside.stat().st_mode & 0o777 == 0o750  # the link was removed, not followed
