"""Incremental builds: after a change to the contents of source files only, just the actions
downstream of them run, and everything a build leaves (outputs, report, exit code, records) is
what the full build would leave."""

from __future__ import annotations

import fcntl
import os
import random
import re
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest
from workspace_helpers import Workspace

# a.txt -> a -> lines (its line count: the same after most edits) -> all
# b.txt -> b (fails on a line "FAIL") -> all; w (reads nothing) -> all; c.txt, all -> tar -> image;
# d.txt -> d
BUILD = """
genrule(name = "w", outs = ["w.txt"], cmd = "echo written > $@")
genrule(name = "a", srcs = ["a.txt"], outs = ["a.out"], cmd = "cat $< > $@")
genrule(name = "lines", srcs = [":a"], outs = ["lines.out"], cmd = "wc -l < $< > $@")
genrule(
    name = "b",
    srcs = ["b.txt"],
    outs = ["b.out"],
    cmd = "if grep -qx FAIL $<; then echo broken >&2; exit 1; fi; cat $< > $@",
)
genrule(name = "all", srcs = [":lines", ":b", ":w"], outs = ["all.out"], cmd = "cat $(SRCS) > $@")
genrule(name = "d", srcs = ["d.txt"], outs = ["d.out"], cmd = "cat $< > $@")
pkg_tar(name = "tar", srcs = ["c.txt", ":all"])
oci_image(name = "image", tars = [":tar"])
"""

SOURCES = {"a.txt": "a\n", "b.txt": "b\n", "c.txt": "c\n", "d.txt": "d\n"}
TARGETS = ["//p:image", "//p:d", "//p:a", "//p:lines", "//p:all"]


def _setup(ws: Workspace) -> None:
    ws.write("p/BUILD.pyimg", BUILD)
    for name, text in SOURCES.items():
        ws.write(f"p/{name}", text)


class Paths:
    """Which path each build took, seen from inside the process."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import pyimg.build.build as full
        import pyimg.build.incremental as incremental

        self.taken: list[str] = []
        build, run = full.build, incremental._run

        def spy_build(*a, **kw):
            self.taken.append("full")
            return build(*a, **kw)

        def spy_run(*a, **kw):
            try:
                result = run(*a, **kw)
            except BaseException:
                self.taken.append("incremental")  # and failed
                raise
            if result is not None:
                self.taken.append("incremental")
            return result

        monkeypatch.setattr(full, "build", spy_build)
        monkeypatch.setattr(incremental, "_run", spy_run)

    def last(self) -> str:
        return self.taken[-1]


@pytest.fixture
def paths(monkeypatch: pytest.MonkeyPatch) -> Paths:
    return Paths(monkeypatch)


def _build(ws: Workspace, *flags: str):
    return ws.run("build", *flags, *TARGETS)


def _summary(err: str) -> str:
    line = [ln for ln in err.splitlines() if ln.startswith("Build completed")][-1]
    return re.sub(r", [0-9.]+s.*", "", line)


def _ran(err: str) -> list[str]:
    return sorted(re.findall(r"^\[\d+/\d+\] (.*) \([0-9.]+s\)$", err, re.M))


def _tree(root: Path) -> dict[str, tuple[bytes, bool]]:
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = Path(dirpath, n)
            out[str(p.relative_to(root))] = (p.read_bytes(), os.access(p, os.X_OK))
    return out


def _clean_build(ws: Workspace, tmp: Path, monkeypatch: pytest.MonkeyPatch):
    """A full build of a copy of the workspace, in a fresh output base and cache."""
    copy = tmp / f"clean-{len(list(tmp.glob('clean-*')))}"
    shutil.copytree(ws.root, copy / "ws", ignore=shutil.ignore_patterns("pyimg-out"))
    clean = Workspace(copy / "ws", copy / "cache")
    with monkeypatch.context() as m:
        m.setenv("PYIMG_FAST_NOOP", "0")
        r = _build(clean)
    return r, clean


def test_one_change_runs_only_its_dependents(ws, paths, tmp_path, monkeypatch):
    _setup(ws)
    assert _build(ws).code == 0
    ws.write("p/d.txt", "d2\n")
    r = _build(ws)
    assert r.code == 0, r.err
    assert paths.taken == ["full", "incremental"]
    assert _ran(r.err) == ["Generating d.out"]
    assert _summary(r.err) == "Build completed: 1 actions run, 8 cache hits"
    assert ws.out("p/d.out").read_text() == "d2\n"
    ws.write("p/a.txt", "a2\n")  # one line still: `lines` is unchanged, `all` and the image too
    r = _build(ws)
    assert r.code == 0 and paths.last() == "incremental"
    assert _ran(r.err) == ["Generating a.out", "Generating lines.out"]
    clean, other = _clean_build(ws, tmp_path, monkeypatch)
    assert clean.code == 0, clean.err
    assert r.out == clean.out and r.out.startswith("//p:image sha256:")
    assert _tree(ws.root / "pyimg-out") == _tree(other.root / "pyimg-out")
    # Then a change that reaches the image: its digest in the report is the new one.
    ws.write("p/c.txt", "c2\n")
    r = _build(ws)
    assert r.code == 0 and paths.last() == "incremental"
    assert r.out != clean.out
    clean, other = _clean_build(ws, tmp_path, monkeypatch)
    assert r.out == clean.out
    assert _tree(ws.root / "pyimg-out") == _tree(other.root / "pyimg-out")
    again = _build(ws)
    assert "nothing changed since the last build" in again.err and again.out == r.out


def test_unchanged_contents_and_reverts_run_nothing_new(ws, paths):
    _setup(ws)
    assert _build(ws).code == 0
    ws.write("p/a.txt", "a\n")  # written again, same bytes
    r = _build(ws)
    assert r.code == 0 and paths.last() == "incremental"
    assert _summary(r.err) == "Build completed: 0 actions run, 9 cache hits"
    ws.write("p/d.txt", "d2\n")
    assert _build(ws).code == 0
    ws.write("p/d.txt", "d\n")  # back: its result is still in the action cache
    r = _build(ws)
    assert paths.last() == "incremental"
    assert _summary(r.err) == "Build completed: 0 actions run, 9 cache hits"
    assert ws.out("p/d.out").read_text() == "d\n"


def test_mode_change_rekeys(ws, paths):
    _setup(ws)
    assert _build(ws).code == 0
    before = ws.out("p/image.digest").read_text()
    (ws.root / "p/c.txt").chmod(0o755)  # the mode shapes the layer
    r = _build(ws)
    assert r.code == 0 and paths.last() == "incremental"
    assert ws.out("p/image.digest").read_text() != before


def test_failing_action_then_fixed(ws, paths, tmp_path, monkeypatch):
    _setup(ws)
    assert _build(ws).code == 0
    good = ws.out("p/all.out").read_text()
    ws.write("p/b.txt", "FAIL\n")
    r = _build(ws)
    assert r.code == 1 and paths.last() == "incremental"
    assert "Genrule //p:b" in r.err and "broken" in r.err
    # Nothing recorded a success: the same build fails again, it is not replayed.
    r = _build(ws)
    assert r.code == 1 and "nothing changed" not in r.err
    assert ws.out("p/all.out").read_text() == good
    ws.write("p/b.txt", "fixed\n")
    r = _build(ws)
    assert r.code == 0, r.err
    assert paths.last() == "incremental"
    assert "Generating b.out" in _ran(r.err) and "Generating d.out" not in _ran(r.err)
    clean, other = _clean_build(ws, tmp_path, monkeypatch)
    assert r.out == clean.out
    assert _tree(ws.root / "pyimg-out") == _tree(other.root / "pyimg-out")


@pytest.mark.parametrize("change", ["add", "remove", "build", "output"])
def test_changes_beyond_contents_take_the_full_path(ws, paths, change):
    _setup(ws)
    ws.write("q/BUILD.pyimg", 'genrule(name = "g", srcs = glob(["*.txt"]), outs = ["g.out"], '
                              'cmd = "cat $(SRCS) > $@")')
    ws.write("q/x.txt", "x\n")
    targets = [*TARGETS, "//q:g"]
    assert ws.run("build", *targets).code == 0
    ws.write("p/d.txt", "d2\n")  # with a change of contents as well
    if change == "add":
        ws.write("q/y.txt", "y\n")
    elif change == "remove":
        (ws.root / "q/x.txt").unlink()
        ws.write("q/z.txt", "z\n")
    elif change == "build":  # a new target (a comment alone is pruned: test_change_pruning.py)
        ws.write("q/BUILD.pyimg", (ws.root / "q/BUILD.pyimg").read_text()
                 + '\ngenrule(name = "h", srcs = [], outs = ["h.out"], cmd = "touch $@")\n')
    else:
        ws.out("p/a.out").unlink()
    r = ws.run("build", *targets)
    assert r.code == 0, r.err
    assert paths.last() == "full"
    assert ws.out("p/d.out").read_text() == "d2\n"
    expected = {"add": "x\ny\n", "remove": "z\n", "build": "x\n", "output": "x\n"}[change]
    assert ws.out("q/g.out").read_text() == expected
    assert ws.out("p/a.out").read_text() == "a\n"


def test_host_tool_change_takes_the_full_path(ws, paths, tmp_path):
    tool = tmp_path / "tool.sh"
    tool.write_text("#!/bin/sh\necho 1\n")
    tool.chmod(0o755)
    ws.write("p/BUILD.pyimg", f"""
        host_tool(name = "tool", path = "{tool}")
        genrule(name = "g", srcs = ["in.txt"], outs = ["g.out"], tools = [":tool"],
                cmd = "cat $< > $@")
    """)
    ws.write("p/in.txt", "in\n")
    assert ws.run("build", "//p:g").code == 0
    tool.write_text("#!/bin/sh\necho 2\n")
    r = ws.run("build", "//p:g")
    assert r.code == 0 and paths.last() == "full"
    assert _summary(r.err) == "Build completed: 1 actions run, 0 cache hits"


def test_engine_or_format_library_change_takes_the_full_path(ws, paths, tmp_path, monkeypatch):
    import pyimg.build.build as full
    import pyimg.build.noop as noop

    module, library = tmp_path / "module.py", tmp_path / "libz.so"
    module.write_text("# 1\n")
    library.write_text("1")
    code = noop.pyimg_code()
    monkeypatch.setattr(noop, "pyimg_code", lambda: [*code, str(module)])
    formats = full.format_files()
    monkeypatch.setattr(full, "format_files", lambda: [*formats, str(library)])
    _setup(ws)
    assert _build(ws).code == 0
    for changed in (module, library):
        ws.write("p/d.txt", f"{changed.name}\n")
        changed.write_text("2")
        assert _build(ws).code == 0 and paths.last() == "full"
        ws.write("p/d.txt", "again\n")
        assert _build(ws).code == 0 and paths.last() == "incremental"


def test_a_source_that_loading_reads_takes_the_full_path(ws, paths):
    ws.write("p/BUILD.pyimg", """
        genrule(name = "g", srcs = ["BUILD.pyimg"], outs = ["g.out"], cmd = "wc -c < $< > $@")
    """)
    assert ws.run("build", "//p:g").code == 0
    ws.write("p/BUILD.pyimg", (ws.root / "p/BUILD.pyimg").read_text() + "# more\n")
    assert ws.run("build", "//p:g").code == 0 and paths.last() == "full"


def test_explain_after_an_incremental_build(ws, paths):
    _setup(ws)
    assert _build(ws).code == 0
    old = ws.run("explain", "//p:a").out
    ws.write("p/a.txt", "a2\n")
    assert _build(ws).code == 0 and paths.last() == "incremental"
    out = ws.run("explain", "//p:lines").out
    assert "//p:a Genrule pyimg-out/p/a.out: ran (p/BUILD.pyimg:3:1)" in out
    assert "input p/a.txt: sha256:" in out
    assert out.splitlines()[-1] == "//p:lines: 2 actions, 2 ran, 0 cache hits"
    # `all` read the same line count: a hit, and its dependencies ran.
    assert ws.run("explain", "//p:all").out.splitlines()[-1] == (
        "//p:all: 5 actions, 2 ran, 3 cache hits")
    assert old != out
    # A no-op then: everything a hit.
    assert "nothing changed" in _build(ws).err
    assert ws.run("explain", "//p:lines").out.splitlines() == [
        "//p:lines: 2 actions, 0 ran, 2 cache hits"]


def test_waits_for_a_concurrent_check(ws, paths):
    """A no-op check of another process holds the lock shared: this build cannot take it over
    and builds in full once it may."""
    _setup(ws)
    assert _build(ws).code == 0
    ws.write("p/d.txt", "d2\n")
    (lock_path,) = ws.cache.glob("output_bases/*/lock")
    with open(lock_path, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        threading.Timer(0.5, lambda: fcntl.flock(lock, fcntl.LOCK_UN)).start()
        r = _build(ws)
    assert r.code == 0, r.err
    assert paths.last() == "full" and "waiting" in r.err
    assert ws.out("p/d.out").read_text() == "d2\n"


def test_interrupted_incremental_build(ws):
    ws.write("p/BUILD.pyimg", """
        genrule(name = "slow", srcs = ["n.txt"], outs = ["slow.txt"],
                cmd = "read n < $< ; sleep $$n ; cp $< $@")
    """)
    ws.write("p/n.txt", "0\n")
    assert ws.run("build", "//p:slow").code == 0
    ws.write("p/n.txt", "30\n")
    proc = ws.spawn("build", "//p:slow")
    deadline = time.monotonic() + 20
    while not list(ws.cache.glob("output_bases/*/scratch/*/execroot/pyimg-out/p")):
        if time.monotonic() > deadline:
            proc.kill()
            proc.communicate()
            pytest.fail("the slow action never started")
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 130, err.decode()
    assert ws.out("p/slow.txt").read_text() == "0\n"  # the last success's, not replaced
    ws.write("p/n.txt", "1\n")
    r = ws.run("build", "//p:slow")
    assert r.code == 0, r.err
    assert ws.out("p/slow.txt").read_text() == "1\n"


@pytest.mark.parametrize(("seed", "flags"), [(10, ()), (16, ("--keep-going",)),
                                           (21, ("--keep-going",))])
def test_differential_random_edits(ws, paths, tmp_path, monkeypatch, seed, flags):
    """The same edits in two workspaces, one built as usual, the other always in full: each
    build must end the same (exit code, error, report, outputs, what explain says).

    Without --keep-going, which actions a failed build completed before it stopped depends on
    timing, in either path; from then on, which results the action cache holds may differ, so
    only outcomes, not counts, are compared."""
    rng = random.Random(seed)
    other = Workspace(tmp_path / "other", tmp_path / "other-cache")
    for w in (ws, other):
        _setup(w)
    contents = ["1\n", "2\n", "1\n2\n", "FAIL\n", "x\ny\nz\n"]
    seen: set[str] = set()

    def build_both():
        taken = len(paths.taken)
        r = _build(ws, *flags)
        seen.update(paths.taken[taken:])
        seen.add(f"exit {r.code}")
        with monkeypatch.context() as m:
            m.setenv("PYIMG_FAST_NOOP", "0")
            full = _build(other, *flags)
        assert r.code == full.code, (r.err, full.err)
        assert r.out == full.out
        if r.code != 0:
            assert _errors(r.err) == _errors(full.err)
            return
        assert _tree(ws.root / "pyimg-out") == _tree(other.root / "pyimg-out")
        if flags or "exit 1" not in seen:
            assert _summary(r.err) == _summary(full.err)
            assert _ran(r.err) == _ran(full.err)
            for target in ("//p:image", "//p:d", "//p:lines"):
                assert (ws.run("explain", "--all", target).out
                        == other.run("explain", "--all", target).out)

    build_both()
    for _ in range(10):
        name = rng.choice(["a.txt", "b.txt", "b.txt", "c.txt", "d.txt"])
        edit = rng.randrange(len(contents) + 2)
        for w in (ws, other):
            path = w.root / "p" / name
            if edit == len(contents):
                path.chmod(path.stat().st_mode ^ 0o100)
            elif edit == len(contents) + 1:
                path.write_bytes(path.read_bytes())  # the same bytes again
            else:
                path.write_text(contents[edit])
        build_both()
    assert {"incremental", "exit 0", "exit 1"} <= seen


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("ERROR:")]
