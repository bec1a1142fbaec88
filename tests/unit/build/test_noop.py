"""The no-op record's check: what changed since the record, and the lock it hands over."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pytest
from pyimg.build.noop import check_record, output_stats, write_record


@pytest.fixture
def recorded(tmp_path, monkeypatch):
    """A workspace with a source and an output, and a record of a build of it."""
    ws = tmp_path / "ws"
    (ws / "pyimg-out").mkdir(parents=True)
    (ws / "src.txt").write_text("1")
    (ws / "pyimg-out/out.txt").write_text("o")
    output_base = tmp_path / "ob"
    output_base.mkdir()
    (output_base / "lock").touch()
    argv = ["build", "--output-base", str(output_base), "//:all"]
    monkeypatch.chdir(ws)
    write_record(output_base, ws, argv, [str(ws / "src.txt"), str(ws / "absent")],
                 [str(ws / "pyimg-out/out.txt")], "report\n", 1, lines=[b"{}", b""])
    return ws, argv, output_base


def test_nothing_changed(recorded):
    ws, argv, _ = recorded
    check = check_record(argv, ws)
    assert check is not None and check.changed == {} and check.lock is None
    assert check.record["stdout"] == "report\n"


def test_changed_files_and_the_lock_held(recorded):
    ws, argv, output_base = recorded
    (ws / "src.txt").write_text("2")
    check = check_record(argv, ws)
    assert check is not None and list(check.changed) == [str(ws / "src.txt")]
    assert check.changed[str(ws / "src.txt")][0] == 1  # the size, as the check saw it
    with open(output_base / "lock") as other:
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_SH | fcntl.LOCK_NB)
        check.release()
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)


@pytest.mark.parametrize("change", ["new file", "removed", "appeared", "output", "dir"])
def test_more_than_contents(recorded, change):
    ws, argv, _ = recorded
    (ws / "src.txt").write_text("2")
    if change == "new file":
        (ws / "new.txt").write_text("x")  # the directory's mtime moves
    elif change == "removed":
        os.unlink(ws / "src.txt")
    elif change == "appeared":
        (ws / "absent").write_text("x")
    elif change == "output":
        (ws / "pyimg-out/out.txt").write_text("changed")
    else:
        (ws / "sub").mkdir()
    assert check_record(argv, ws) is None


def _save_by_rename(path: Path, text: str) -> None:
    """As `sed -i` and many editors save: a new file renamed over the old one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_a_file_saved_by_a_rename(recorded):
    """Its directory's mtime moves but not its listing: only the file changed."""
    ws, argv, _ = recorded
    _save_by_rename(ws / "src.txt", "2")
    check = check_record(argv, ws)
    assert check is not None
    assert list(check.changed) == [str(ws / "src.txt")]
    assert list(check.dirs) == [str(ws)]
    assert check.dirs[str(ws)] == [os.stat(ws).st_size, os.stat(ws).st_mtime_ns,
                                   os.stat(ws).st_ino, 0]
    check.release()


@pytest.mark.parametrize("change", ["added", "removed", "file to dir", "link"])
def test_a_listing_that_changed(recorded, change):
    """What glob() and package discovery see: names, directories, where links point."""
    ws, argv, output_base = recorded
    (ws / "other.txt").write_text("o")
    (ws / "target1").write_text("1")
    (ws / "target2").write_text("2")
    (ws / "link").symlink_to("target1")
    (ws / "thing").write_text("t")
    write_record(output_base, ws, argv, [str(ws / "src.txt")],
                 [str(ws / "pyimg-out/out.txt")], "report\n", 1, lines=[b"{}", b""])
    _save_by_rename(ws / "src.txt", "2")
    if change == "added":
        (ws / "new.txt").write_text("n")
    elif change == "removed":
        (ws / "other.txt").unlink()
    elif change == "file to dir":
        (ws / "thing").unlink()
        (ws / "thing").mkdir()
    else:
        (ws / "link").unlink()
        (ws / "link").symlink_to("target2")
    assert check_record(argv, ws) is None


def test_another_check_holding_the_lock(recorded):
    ws, argv, output_base = recorded
    (ws / "src.txt").write_text("2")
    with open(output_base / "lock") as other:
        fcntl.flock(other, fcntl.LOCK_SH)  # a concurrent no-op check: cannot take it over
        assert check_record(argv, ws) is None
        fcntl.flock(other, fcntl.LOCK_UN)
    (ws / "src.txt").write_text("3")
    check = check_record(argv, ws)
    assert check is not None and check.lock is not None
    check.release()


def test_other_command_lines(recorded):
    ws, argv, _ = recorded
    assert check_record([*argv, "--jobs", "1"], ws) is None


def test_output_stats_walk_directories(tmp_path):
    d = tmp_path / "layout"
    (d / "blobs").mkdir(parents=True)
    (d / "blobs/x").write_text("x")
    stats = output_stats([str(d), str(tmp_path / "missing")])
    assert set(stats) == {str(d), str(d / "blobs"), str(d / "blobs/x"), str(tmp_path / "missing")}
    assert stats[str(tmp_path / "missing")] is None
    assert stats[str(d / "blobs/x")][3] == 0  # no ctime: linking outputs again changes it
    assert Path(d / "blobs/x").exists()


def test_saved_record_patches_what_changed(recorded):
    ws, argv, _ = recorded
    check = _checked_after_an_edit(ws, argv)
    src = str(ws / "src.txt")
    check.set("files", src, check.changed[src])
    check.set(None, "stdout", 'new "report"\n')
    check.save([b"{}"])
    # The very bytes of serializing it all again.
    assert check.path.read_bytes().split(b"\n")[0] == json.dumps(check.record).encode()
    assert check.record["files"][src] == check.changed[src]
    # What cannot be patched is serialized again, with the same result.
    out = str(ws / "pyimg-out/out.txt")
    check.drop("outputs", out)
    check.set("outputs", out + ".new", [1, 2, 3, 0])
    check.save([b"{}"])
    assert json.loads(check.path.read_bytes().split(b"\n")[0]) == check.record
    assert check_record(argv, ws) is None  # that output is not there


def test_many_changed_values_serialize_the_record_once(recorded, monkeypatch):
    """A root-source edit changes thousands of outputs' stats: past a few dozen patches the
    record is serialized once instead of each patch scanning the whole line (quadratic)."""
    import pyimg.build.noop as noop

    ws, argv, _ = recorded
    check = _checked_after_an_edit(ws, argv)
    out = str(ws / "pyimg-out/out.txt")
    for i in range(noop._MOST_PATCHES + 1):
        check.set("outputs", out, [i, 2, 3, 0])
    calls: list[str] = []
    dumps = json.dumps
    monkeypatch.setattr(json, "dumps", lambda value, **kw: calls.append("dumps") or dumps(value, **kw))
    check.save([b"{}"])
    assert calls == ["dumps"]  # one serialization; patching would dump each old and new value
    assert check.path.read_bytes().split(b"\n")[0] == json.dumps(check.record).encode()


def _checked_after_an_edit(ws: Path, argv: list[str]):
    """The check of the recorded build after its source was edited, its lock released."""
    (ws / "src.txt").write_text("22")
    check = check_record(argv, ws)
    assert check is not None
    check.release()
    return check


def test_a_module_added_to_the_engine_takes_the_normal_path(tmp_path, monkeypatch):
    """The check lists no engine directory: a module added changes its directory's stat."""
    import pyimg.build.noop as noop

    engine = tmp_path / "engine"
    (engine / "sub").mkdir(parents=True)
    monkeypatch.setattr(noop, "pyimg_dirs", lambda: noop._file_stats([engine, engine / "sub"]))
    ws = tmp_path / "ws"
    ws.mkdir()
    output_base = tmp_path / "ob"
    output_base.mkdir()
    (output_base / "lock").touch()
    argv = ["build", "--output-base", str(output_base), "//:all"]
    monkeypatch.chdir(ws)
    write_record(output_base, ws, argv, [], [], "report\n", 0)
    assert check_record(argv, ws) is not None
    (engine / "sub/new_module.py").write_text("")
    assert check_record(argv, ws) is None


def test_the_engine_directories_cover_every_module():
    import pyimg.build.noop as noop

    dirs = noop.pyimg_dirs()
    assert {os.path.dirname(m) for m in noop.pyimg_code()} <= set(dirs)
    assert all(s is not None for s in dirs.values())
    assert not any("__pycache__" in d for d in dirs)


def test_a_record_without_the_engine_directories_is_not_replayed(recorded):
    ws, argv, output_base = recorded
    path = next((output_base / "noop").iterdir())
    head, _, tail = path.read_bytes().partition(b"\n")
    record = json.loads(head)
    del record["engine_dirs"]
    path.write_bytes(json.dumps(record).encode() + b"\n" + tail)
    assert check_record(argv, ws) is None
