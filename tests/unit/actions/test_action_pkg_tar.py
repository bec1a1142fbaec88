"""The pkg_tar builtin: entries, defaults, modes, owner, deps, whiteouts, directory inputs, errors."""

from __future__ import annotations

import gzip
import tarfile

import pytest
from oci_workspace import Workspace
from pyimg.core.errors import UserInputError


def _members(ws: Workspace, tar: str) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(ws.path(tar)) as tf:
        return {m.name: m for m in tf.getmembers()}


def test_entries_and_defaults(ws: Workspace) -> None:
    ws.write("p/a.txt", "a")
    ws.write("p/tool", "t", mode=0o750)
    tar = ws.tar(
        "t",
        {
            "entries": [
                {"path": "./usr/share/a.txt", "src": "p/a.txt"},
                {"path": "usr/bin/tool", "src": "p/tool"},
                {"path": "usr/bin/tool2", "type": "hardlink", "target": "usr/bin/tool"},
                {"path": "etc/conf", "src": "p/a.txt", "mode": "0600", "owner": "7.8"},
            ],
            "symlinks": {"usr/bin/t": "tool"},
            "empty_dirs": ["var/empty"],
            "remove": ["etc/old"],
            "opaque_dirs": ["var/cache"],
            "owner": "1.2",
            "mtime": 99,
            "modes": {"usr": "0700"},
        },
        ["p/a.txt", "p/tool"],
    )
    ms = _members(ws, tar)
    assert list(ms) == sorted(ms, key=str.encode)
    assert ms["usr/share/a.txt"].mode == 0o644
    assert ms["usr/bin/tool"].mode == 0o755  # executable input
    assert ms["usr/bin/tool2"].islnk() and ms["usr/bin/tool2"].linkname == "usr/bin/tool"
    assert (ms["etc/conf"].mode, ms["etc/conf"].uid, ms["etc/conf"].gid) == (0o600, 7, 8)
    assert ms["usr/bin/t"].issym() and ms["usr/bin/t"].linkname == "tool"
    assert ms["var/empty"].isdir() and "etc/.wh.old" in ms and "var/cache/.wh..wh..opq" in ms
    assert ms["usr"].mode == 0o700  # an implied parent given a mode
    assert {(m.mtime, m.uname, m.gname) for m in ms.values()} == {(99, "", "")}
    assert ms["usr/share"].uid == 1


def test_global_mode_and_directory_input(ws: Workspace) -> None:
    ws.write("tree/x/y.txt", "y")
    ws.write("tree/run", "r", mode=0o755)
    ws.path("tree/ln").symlink_to("run")
    tar = ws.tar("t", {"entries": [{"path": "opt/app", "src": "tree"}], "mode": "0444"}, ["tree"])
    ms = _members(ws, tar)
    # `mode` applies to every file, also those of a directory input
    assert ms["opt/app/x/y.txt"].mode == ms["opt/app/run"].mode == 0o444
    assert ms["opt/app/x"].mode == 0o755 and ms["opt/app/ln"].issym()
    tar = ws.tar("t2", {"entries": [{"path": "opt/app", "src": "tree"}]}, ["tree"])
    ms = _members(ws, tar)
    assert (ms["opt/app/x/y.txt"].mode, ms["opt/app/run"].mode) == (0o644, 0o755)
    ws.write("f", "f", mode=0o755)
    ms = _members(ws, ws.tar("u", {"entries": [{"path": "f", "src": "f"}], "mode": "0444"}, ["f"]))
    assert ms["f"].mode == 0o444


def test_deps_are_merged(ws: Workspace) -> None:
    ws.write("a", "a")
    t1 = ws.tar("one", {"entries": [{"path": "usr/a", "src": "a"}], "owner": "5.5"}, ["a"])
    gz = "pyimg-out/one.tar.gz"
    ws.write(gz, gzip.compress(ws.path(t1).read_bytes()))
    t2 = ws.tar("two", {"empty_dirs": ["usr/b"], "deps": [gz]}, [gz])
    ms = _members(ws, t2)
    assert ms["usr/a"].uid == 5 and ms["usr/b"].isdir()
    assert not list(ws.path("pyimg-out").glob(".pkg_tar-*"))  # scratch removed


def test_deps_dir_moves_merged_entries_and_hard_link_targets(ws: Workspace) -> None:
    ws.write("a", "a")
    t1 = ws.tar("one", {
        "entries": [{"path": "usr/a", "src": "a"},
                    {"path": "usr/b", "type": "hardlink", "target": "usr/a"}],
        "symlinks": {"usr/c": "/usr/a"},
    }, ["a"])
    t2 = ws.tar("two", {"deps": [t1], "deps_dir": "opt/app"}, [t1])
    ms = _members(ws, t2)
    assert sorted(ms) == ["opt", "opt/app", "opt/app/usr", "opt/app/usr/a", "opt/app/usr/b",
                          "opt/app/usr/c"]
    assert ms["opt/app/usr/b"].islnk() and ms["opt/app/usr/b"].linkname == "opt/app/usr/a"
    assert ms["opt/app/usr/c"].linkname == "/usr/a"  # a symlink's target is kept verbatim


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"entries": [{"path": "a", "src": "nope"}]}, "'nope' is not a declared input"),
        ({"entries": [{"path": "/a", "type": "dir"}]}, "absolute path"),
        ({"entries": [{"path": "../a", "type": "dir"}]}, "'..'"),
        ({"entries": [{"path": "a", "type": "fifo"}]}, "'type' must be"),
        ({"entries": [{"path": "a", "type": "symlink"}]}, "needs a 'target'"),
        ({"entries": [{"path": "a", "type": "dir", "color": 1}]}, "unknown keys"),
        ({"entries": [{"path": "a", "type": "dir"}], "modes": {"b": "0644"}}, "'b' is not a path"),
        ({"mode": "rwx"}, "bad mode"),
        ({"owner": "root"}, "uid.gid"),
        ({"mtime": -5}, "mtime"),
        ({"entires": []}, "did you mean 'entries'"),
        ({"empty_dirs": ["a"], "symlinks": {"a": "b"}}, "duplicate path in layer: 'a'"),
    ],
)
def test_bad_params(ws: Workspace, params: dict, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        ws.tar("bad", params)
