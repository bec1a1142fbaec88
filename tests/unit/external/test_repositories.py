"""External repositories without a network: lock format, pins, repo-aware loading, unpinned."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pyimg.external.repositories import lock_covers, read_lock, write_lock
from pyimg.loading.module_file import OciPull
from workspace_helpers import Workspace


def test_lock_is_sorted_one_entry_per_line(tmp_path: Path) -> None:
    entries = {
        "zeta": {"kind": "http_file", "urls": ["https://x"], "sha256": "a" * 64},
        "alpha": {"kind": "oci_pull", "image": "r/i", "tag": "1", "digest": "sha256:" + "b" * 64},
    }
    write_lock(tmp_path, entries)
    text = (tmp_path / "pyimg.lock").read_text()
    lines = text.splitlines()
    assert lines[2].startswith('    "alpha": {"digest"') and lines[3].startswith('    "zeta": ')
    assert json.loads(text) == {"repositories": entries, "version": 1}
    assert read_lock(tmp_path) == entries


def test_lock_covers_only_the_same_image_and_tag() -> None:
    decl = OciPull("b", "MODULE.pyimg:1", "r/i", None, "1")
    entry = {"kind": "oci_pull", "image": "r/i", "tag": "1", "digest": "sha256:" + "b" * 64}
    assert lock_covers(decl, entry)
    assert not lock_covers(decl, {**entry, "tag": "2"})
    assert not lock_covers(decl, {**entry, "image": "r/j"})
    assert not lock_covers(decl, None)


def test_unpinned_build_exits_2_naming_the_declaration(ws: Workspace) -> None:
    ws.write("MODULE.pyimg", '\noci_pull(name = "base", image = "example.com/base", tag = "v1")\n')
    ws.write("app/BUILD.pyimg", 'filegroup(name = "f", srcs = ["x"])\n')
    ws.write("app/x", "x")
    r = ws.run("build", "//app:f")
    assert r.code == 2
    assert "MODULE.pyimg:2:1: oci_pull 'base' has no digest" in r.err
    assert "run `pyimg lock`" in r.err


def test_file_url_http_file_and_labels(ws: Workspace, tmp_path: Path) -> None:
    src = tmp_path / "data.txt"
    src.write_text("payload\n")
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    ws.write(
        "MODULE.pyimg", f'http_file(name = "data", urls = ["file://{src}"], sha256 = "{sha}")\n'
    )
    ws.write(
        "app/BUILD.pyimg",
        """
        filegroup(name = "a", srcs = ["@data"])
        filegroup(name = "b", srcs = ["@data//file"])
        genrule(name = "c", srcs = ["@data//file:data.txt"], outs = ["c.txt"], cmd = "cat $< > $@")
        """,
    )
    r = ws.run("build", "//app:a", "//app:b", "//app:c")
    assert r.code == 0, r.err
    assert ws.out("app/c.txt").read_text() == "payload\n"


def test_unknown_repository_suggests(ws: Workspace, tmp_path: Path) -> None:
    src = tmp_path / "d"
    src.write_text("x")
    sha = hashlib.sha256(b"x").hexdigest()
    ws.write(
        "MODULE.pyimg", f'http_file(name = "data", urls = ["file://{src}"], sha256 = "{sha}")\n'
    )
    ws.write("app/BUILD.pyimg", 'filegroup(name = "a", srcs = ["@dta"])\n')
    r = ws.run("build", "//app:a")
    assert r.code == 2
    assert "no repository '@dta'" in r.err and "did you mean '@data'" in r.err
