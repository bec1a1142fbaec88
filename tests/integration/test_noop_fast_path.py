"""The no-op fast path replays a build only when nothing it depends on changed."""

from __future__ import annotations

import os

FAST = "nothing changed since the last build"


def _setup(ws):
    ws.write("p/BUILD.pyimg", """
        genrule(name = "cat", srcs = glob(["*.txt"]), outs = ["all"], cmd = "cat $(SRCS) > $@")
        pkg_tar(name = "t", srcs = [":cat"])
        oci_image(name = "image", tars = [":t"])
    """)
    ws.write("p/a.txt", "a\n")


def _build(ws, *extra):
    r = ws.run("build", *extra, "//p:image")
    assert r.code == 0, r.err
    return r


def test_replays_the_report_when_nothing_changed(ws):
    _setup(ws)
    first = _build(ws)
    again = _build(ws)
    assert FAST in again.err
    assert again.out == first.out and again.out.startswith("//p:image sha256:")


def test_source_change_builds(ws):
    _setup(ws)
    _build(ws)
    _build(ws)
    ws.write("p/a.txt", "changed\n")
    r = _build(ws)
    assert FAST not in r.err and "actions run" in r.err and "0 actions run" not in r.err


def test_same_mtime_edit_is_still_seen(ws):
    _setup(ws)
    _build(ws)
    st = (ws.root / "p/a.txt").stat()
    ws.write("p/a.txt", "b\n")  # same size
    os.utime(ws.root / "p/a.txt", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert FAST not in _build(ws).err  # ctime moved


def test_new_file_matching_a_glob_builds(ws):
    _setup(ws)
    _build(ws)
    before = ws.out("p/image.digest").read_text()
    ws.write("p/b.txt", "b\n")
    r = _build(ws)
    assert FAST not in r.err
    assert ws.out("p/image.digest").read_text() != before


def test_build_file_change_builds(ws):
    _setup(ws)
    _build(ws)
    ws.write("p/BUILD.pyimg", (ws.root / "p/BUILD.pyimg").read_text() + "\n# a comment\n")
    assert FAST not in _build(ws).err


def test_damaged_output_is_repaired(ws):
    _setup(ws)
    _build(ws)
    digest_file = ws.out("p/image.digest")
    good = digest_file.read_text()
    digest_file.unlink()
    r = _build(ws)
    assert FAST not in r.err and digest_file.read_text() == good
    extra = ws.out("p/image/stray")
    extra.write_text("x")
    assert FAST not in _build(ws).err


def test_other_flags_or_directory_take_the_normal_path(ws):
    _setup(ws)
    _build(ws)
    assert FAST not in _build(ws, "--jobs", "1").err
    assert FAST in _build(ws, "--jobs", "1").err
    r = ws.run("build", "//p:image", cwd=ws.root / "p")
    assert r.code == 0 and FAST not in r.err


def test_secrets_never_replay(ws, monkeypatch):
    _setup(ws)
    monkeypatch.setenv("TOKEN", "s3cr3t")
    _build(ws, "--secret", "id=tok,env=TOKEN")
    assert FAST not in _build(ws, "--secret", "id=tok,env=TOKEN").err


def test_escape_hatch_disables_the_fast_path(ws, monkeypatch):
    _setup(ws)
    _build(ws)
    monkeypatch.setenv("PYIMG_FAST_NOOP", "0")
    r = _build(ws)
    assert FAST not in r.err and "0 actions run" in r.err


def test_a_layout_in_the_workspace_is_left_as_it_was(ws):
    """The layout's blobs are the user's files: the build copies them, never links them (a link
    moves their ctime, which made the next build verify, and the store made them read-only)."""
    import shutil
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "examples/base"
    shutil.copytree(example / "layout", ws.root / "base/layout")
    digest = next(line.split('"')[1] for line in (example / "BUILD.pyimg").read_text().splitlines()
                  if "digest =" in line)
    ws.write("base/BUILD.pyimg", f"""
        oci_layout(name = "static", path = "layout", digest = "{digest}")
        oci_image(name = "image", base = ":static", env = {{"A": "1"}})
    """)
    blobs = sorted((ws.root / "base/layout/blobs/sha256").iterdir())
    for blob in blobs:
        os.chmod(blob, 0o644)
    before = [(b.stat().st_mode, b.stat().st_nlink, b.stat().st_ctime_ns) for b in blobs]
    r = ws.run("build", "//base:image")
    assert r.code == 0, r.err
    assert [(b.stat().st_mode, b.stat().st_nlink, b.stat().st_ctime_ns) for b in blobs] == before
    again = ws.run("build", "//base:image")
    assert again.code == 0 and FAST in again.err
