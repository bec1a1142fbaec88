"""`pyimg build` on real workspaces: caching, incrementality, concurrency, interruption."""

from __future__ import annotations

import os
import signal
import time

import pytest

CHAIN = """
genrule(
    name = "a",
    srcs = ["a.txt"],
    outs = ["a.out"],
    cmd = "cat $< > $@",
)
genrule(
    name = "b",
    srcs = ["b.txt"],
    outs = ["b.out"],
    cmd = "cat $< > $@",
)
genrule(
    name = "ab",
    srcs = [":a", ":b"],
    outs = ["ab.out"],
    cmd = "cat $(SRCS) > $@",
)
"""


def _chain(ws):
    ws.write("p/BUILD.pyimg", CHAIN)
    ws.write("p/a.txt", "A\n")
    ws.write("p/b.txt", "B\n")


def _ran(result) -> int:
    line = [ln for ln in result.err.splitlines() if ln.startswith("Build completed")][-1]
    return int(line.split(": ")[1].split(" actions run")[0])


def test_cold_noop_and_incremental(ws):
    _chain(ws)
    r = ws.run("build", "//p:ab")
    assert r.code == 0, r.err
    assert _ran(r) == 3
    assert ws.out("p/ab.out").read_text() == "A\nB\n"
    r = ws.run("build", "//p:ab")
    assert r.code == 0 and _ran(r) == 0
    ws.write("p/a.txt", "A2\n")
    r = ws.run("build", "//p:ab")
    assert _ran(r) == 2  # a and ab; b is a cache hit
    assert ws.out("p/ab.out").read_text() == "A2\nB\n"


def test_same_output_content_stops_propagation(ws):
    ws.write("p/BUILD.pyimg", """
        genrule(name = "len", srcs = ["in.txt"], outs = ["len.txt"], cmd = "wc -c < $< > $@")
        genrule(name = "use", srcs = [":len"], outs = ["use.txt"], cmd = "cat $< > $@")
    """)
    ws.write("p/in.txt", "abc")
    assert ws.run("build", "//p:use").code == 0
    ws.write("p/in.txt", "xyz")  # same length: `use` sees identical input bytes
    assert _ran(ws.run("build", "//p:use")) == 1


def test_patterns_and_cwd_relative(ws):
    _chain(ws)
    ws.write("q/BUILD", 'genrule(name = "q", outs = ["q.txt"], cmd = "echo q > $@")')
    r = ws.run("build", "//...")
    assert r.code == 0, r.err
    assert ws.out("q/q.txt").read_text() == "q\n"
    r = ws.run("build", ":all", cwd=ws.root / "p")
    assert r.code == 0 and _ran(r) == 0


def test_failure_prints_label_command_and_output(ws):
    ws.write("p/BUILD.pyimg", """
        genrule(
            name = "bad",
            outs = ["bad.txt"],
            cmd = "echo some diagnostics; echo more >&2; exit 7",
        )
    """)
    r = ws.run("build", "//p:bad")
    assert r.code == 1
    assert "p/BUILD.pyimg:2:1: Genrule //p:bad exited with code 7" in r.err
    assert "some diagnostics" in r.err and "more" in r.err
    assert "command: /bin/sh -c" in r.err
    assert not ws.out("p/bad.txt").exists()


def test_missing_declared_output_is_an_error(ws):
    ws.write("p/BUILD.pyimg", 'genrule(name = "x", outs = ["x.txt", "y.txt"], cmd = "touch $(location x.txt) || touch pyimg-out/p/x.txt")')
    r = ws.run("build", "//p:x")
    assert r.code in (1, 2)
    assert "y.txt" in r.err


def test_keep_going_builds_the_rest(ws):
    ws.write("p/BUILD.pyimg", """
        genrule(name = "bad", outs = ["bad.txt"], cmd = "exit 1")
        genrule(name = "good", outs = ["good.txt"], cmd = "echo ok > $@")
    """)
    r = ws.run("build", "--keep-going", "--jobs", "1", "//p:all")
    assert r.code == 1
    assert ws.out("p/good.txt").read_text() == "ok\n"


def test_corrupt_cache_entry_is_rebuilt(ws):
    _chain(ws)
    assert ws.run("build", "//p:ab").code == 0
    blobs = [p for p in (ws.cache / "cas").rglob("*") if p.is_file()]
    for b in blobs:
        b.chmod(0o644)
        b.write_bytes(b"garbage")
    (ws.root / "pyimg-out").rename(ws.root / "old-out")
    r = ws.run("build", "//p:ab")
    assert r.code == 0, r.err
    assert ws.out("p/ab.out").read_text() == "A\nB\n"


def test_two_builds_at_once_share_one_cache(ws, tmp_path):
    from workspace_helpers import Workspace

    other = Workspace(tmp_path / "ws2", ws.cache)
    for w in (ws, other):
        w.write("p/BUILD.pyimg", """
            genrule(name = "slow", srcs = ["in.txt"], outs = ["out.txt"], cmd = "sleep 0.5; cat $< > $@")
        """)
        w.write("p/in.txt", "same\n")
    procs = [w.spawn("build", "//p:slow") for w in (ws, other, ws)]
    done = [p.communicate(timeout=60) for p in procs]
    codes = [p.returncode for p in procs]
    errs = [err.decode() for _, err in done]
    assert codes == [0, 0, 0], errs
    for w in (ws, other):
        assert w.out("p/out.txt").read_text() == "same\n"
    assert any("waiting" in e for e in errs)  # the second command on one output base waited


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupt_then_correct_rebuild(ws, sig):
    ws.write("p/BUILD.pyimg", """
        genrule(name = "fast", outs = ["fast.txt"], cmd = "echo fast > $@")
        genrule(name = "slow", srcs = [":fast"], outs = ["slow.txt"], cmd = "sleep 30; cat $< > $@")
    """)
    proc = ws.spawn("build", "//p:slow")
    # Signal once the command runs: a kill -9 while bubblewrap is still starting (before its
    # prctl(PR_SET_PDEATHSIG)) is a window no parent can close, and not what this test is about.
    deadline = time.monotonic() + 20
    while not (mine := _sleepers(proc.pid)):
        if time.monotonic() > deadline:
            proc.kill()
            proc.communicate()
            pytest.fail("the slow action never started")
        time.sleep(0.05)
    t0 = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=10)
    if sig == signal.SIGINT:
        assert time.monotonic() - t0 < 1.5
        assert proc.returncode == 130, err.decode()
    assert not ws.out("p/slow.txt").exists()
    # No sleeper left behind (the kernel tears the sandbox's pid namespace down asynchronously).
    deadline = time.monotonic() + 5
    while True:
        sleepers = [p for p in mine if _cmdline(p).startswith("sleep 30")]
        if not sleepers or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert sleepers == []
    ws.write("p/BUILD.pyimg", """
        genrule(name = "fast", outs = ["fast.txt"], cmd = "echo fast > $@")
        genrule(name = "slow", srcs = [":fast"], outs = ["slow.txt"], cmd = "cat $< > $@")
    """)
    r = ws.run("build", "//p:slow")
    assert r.code == 0, r.err
    assert ws.out("p/slow.txt").read_text() == "fast\n"


def _sleepers(ancestor: int) -> list[str]:
    """The `sleep 30` processes below `ancestor` (other tests may run their own at the time)."""
    return [
        p for p in os.listdir("/proc")
        if p.isdigit() and _cmdline(p).startswith("sleep 30") and _descends(p, ancestor)
    ]


def _descends(pid: str, ancestor: int) -> bool:
    while pid not in ("0", "1"):
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = f.read().rsplit(")", 1)[1].split()[1]  # the field after the state: ppid
        except OSError:
            return False
        if pid == str(ancestor):
            return True
    return False


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
