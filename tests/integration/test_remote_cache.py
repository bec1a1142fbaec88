"""--remote-cache against a real BuildGrid on loopback: a second clone at another path, with an
empty disk cache and another home, gets every action from the remote cache with the same
digests; a read-only client uploads nothing; a server killed in the middle of a build leaves a
warning and a local build with the same digests; a large blob travels through ByteStream."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from buildgrid import BuildGrid, Lane
from workspace_helpers import REPO, Workspace


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """One BuildGrid for the tests that leave it running (its start-up was most of their
    time); a test that kills its server has a server of its own (`own_grid`)."""
    grid = BuildGrid(tmp_path_factory.mktemp("buildgrid"), lanes=3).start()
    yield grid
    grid.stop()


@pytest.fixture
def grid(server: BuildGrid):
    """A clean instance of the module's server."""
    return server.lane()


@pytest.fixture
def own_grid(tmp_path: Path):
    server = BuildGrid(tmp_path / "buildgrid").start()
    yield Lane(server, server.instance)
    server.stop()


def _clone(tmp_path: Path, name: str, source: Path = REPO / "examples") -> Workspace:
    root = tmp_path / name
    shutil.copytree(source, root / "ws", ignore=shutil.ignore_patterns("pyimg-out"))
    return Workspace(root / "ws", root / "cache")


def _build(ws: Workspace, *flags: str, home: Path | None = None):
    old = os.environ.get("HOME")
    if home is not None:
        home.mkdir(parents=True, exist_ok=True)
        os.environ["HOME"] = str(home)
    try:
        return ws.run("build", "--output-base", str(ws.root.parent / "base"), *flags, "//...")
    finally:
        if home is not None and old is not None:
            os.environ["HOME"] = old


def _digests(out: str) -> dict[str, str]:
    return {line.split()[0]: line.split()[1] for line in out.splitlines() if line.startswith("//")}


@pytest.mark.slow
def test_a_second_clone_gets_every_action_from_the_remote_cache(tmp_path, own_grid):
    grid = own_grid
    first = _clone(tmp_path, "first")
    cold = _build(first, *grid.flags)
    assert cold.code == 0, cold.err
    assert "0 hits" in cold.err and "results uploaded" in cold.err
    second = _clone(tmp_path, "elsewhere/second")
    warm = _build(second, *grid.flags, home=tmp_path / "other-home")
    assert warm.code == 0, warm.err
    assert "Build completed: 0 actions run" in warm.err, warm.err
    assert " 0 misses" in warm.err
    assert _digests(warm.out) == _digests(cold.out) and len(_digests(cold.out)) == 4
    explained = second.run("explain", "--output-base", str(second.root.parent / "base"),
                           "//app:image")
    assert explained.code == 0, explained.err
    assert "remote cache hit" in explained.out
    assert explained.out.splitlines()[-1] == "//app:image: 5 actions, 0 ran, 5 cache hits (5 remote)"
    # Replayed as a no-op, the same build was served by nothing but the local state.
    replay = _build(second, *grid.flags, home=tmp_path / "other-home")
    assert "nothing changed" in replay.err
    explained = second.run("explain", "--output-base", str(second.root.parent / "base"),
                           "//app:image")
    assert "remote" not in explained.out
    # Level one is filled: a third build of the second clone needs the server no more.
    grid.stop()
    (second.root / "app/assets/index.html").touch()  # not a no-op replay
    again = _build(second, *grid.flags, "--remote-timeout", "5")
    assert again.code == 0 and _digests(again.out) == _digests(cold.out)


@pytest.mark.slow
def test_a_read_only_client_uploads_nothing(tmp_path, grid):
    laptop = _clone(tmp_path, "laptop")
    r = _build(laptop, *grid.flags, "--remote-upload-local-results=false")
    assert r.code == 0, r.err
    ran = re.search(r"Build completed: (\d+) actions run", r.err)
    assert ran and "uploaded" not in r.err and f"0 hits, {ran.group(1)} misses" in r.err
    ci = _clone(tmp_path, "ci")
    r2 = _build(ci, *grid.flags)
    assert r2.code == 0, r2.err
    assert " 0 hits" in r2.err  # nothing of the laptop's reached the server


CHAIN = """\
genrule(name = "one", srcs = ["in.txt"], outs = ["one.txt"], cmd = "cp $< $@")
genrule(name = "two", srcs = [":one"], outs = ["two.txt"], cmd = "sleep 2; cp $< $@")
genrule(name = "three", srcs = [":two"], outs = ["three.txt"], cmd = "sleep 1; cp $< $@")
genrule(name = "four", srcs = [":three"], outs = ["four.txt"], cmd = "cat $< $< > $@")
"""


@pytest.mark.slow
def test_a_server_killed_mid_build_leaves_a_warning_and_a_local_build(tmp_path, own_grid):
    grid = own_grid
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    ws.write("p/BUILD.pyimg", CHAIN)
    ws.write("p/in.txt", "data\n")
    proc = ws.spawn("build", *grid.flags, "--remote-timeout", "10",
                    "--output-base", str(tmp_path / "base"), "//p:four")
    assert proc.stderr is not None
    seen = []
    for line in iter(proc.stderr.readline, b""):
        seen.append(line.decode())
        if line.startswith(b"[1/"):
            grid.stop()  # one action ran and was uploaded; the others meet a dead server
            break
    rest = proc.communicate(timeout=300)
    err = "".join(seen) + rest[1].decode()
    assert proc.returncode == 0, err
    assert err.count(f"WARNING: remote cache {grid.url} failed") == 1, err
    assert "unavailable since it failed (UNAVAILABLE" in err
    local = Workspace(tmp_path / "local", tmp_path / "local-cache")
    local.write("p/BUILD.pyimg", CHAIN)
    local.write("p/in.txt", "data\n")
    assert local.run("build", "//p:four").code == 0
    assert ws.out("p/four.txt").read_bytes() == local.out("p/four.txt").read_bytes() == b"data\n" * 2


@pytest.mark.slow
def test_a_large_blob_travels_through_bytestream(tmp_path, monkeypatch, grid):
    from pyimg.remote import client

    # The lane's instance name prefixes every ByteStream resource name.
    flags = grid.flags
    assert grid.instance

    calls: list[str] = []
    write, read = client.RemoteClient.write, client.RemoteClient._read_stream
    monkeypatch.setattr(client.RemoteClient, "write",
                        lambda self, blob: (calls.append("write"), write(self, blob))[1])
    monkeypatch.setattr(client.RemoteClient, "_read_stream",
                        lambda self, d: (calls.append("read"), read(self, d))[1])
    big = 'genrule(name = "big", outs = ["big.bin"], cmd = "yes pyimg | head -c 3500000 > $@")\n'
    a = Workspace(tmp_path / "a", tmp_path / "cache-a")
    a.write("p/BUILD.pyimg", big)
    assert a.run("build", *flags, "//p:big").code == 0
    assert calls == ["write"]
    b = Workspace(tmp_path / "b", tmp_path / "cache-b")
    b.write("p/BUILD.pyimg", big)
    r = b.run("build", *flags, "//p:big")
    assert r.code == 0 and "1 hits" in r.err, r.err
    assert calls == ["write", "read"]
    data = b.out("p/big.bin").read_bytes()
    assert len(data) == 3500000 and data == a.out("p/big.bin").read_bytes()


def test_an_unreachable_cache_is_a_warning(tmp_path):
    from buildgrid import free_port

    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    ws.write("p/BUILD.pyimg", CHAIN.replace("sleep 2; ", "").replace("sleep 1; ", ""))
    ws.write("p/in.txt", "x\n")
    r = ws.run("build", "--remote-cache", f"grpc://127.0.0.1:{free_port()}",
               "--remote-timeout", "5", "//p:four")
    assert r.code == 0, r.err
    assert r.err.count("WARNING: remote cache") == 1
    assert "Build completed: 4 actions run" in r.err


def test_bad_flags_are_usage_errors(tmp_path):
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    ws.write("p/BUILD.pyimg", CHAIN)
    r = ws.run("build", "--remote-cache", "http://x:1", "//p:one")
    assert r.code == 2 and "expected grpc://HOST:PORT" in r.err
    r = ws.run("build", "--remote-cache", "grpc://x:1", "--remote-header", "s3cr3t", "//p:one")
    assert r.code == 2 and "NAME=VALUE" in r.err and "s3cr3t" not in r.err
    r = ws.run("build", "--remote-executor", "grpc://x:1", "--remote-retry-backoff", "-1",
               "//p:one")
    assert r.code == 2 and "--remote-retry-backoff must not be negative" in r.err, r.err


@pytest.mark.slow
def test_an_executor_that_keeps_failing_fails_the_action_or_falls_back(tmp_path, grid):
    from buildgrid import free_port

    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    ws.write("p/BUILD.pyimg", CHAIN.replace("sleep 2; ", "").replace("sleep 1; ", ""))
    ws.write("p/in.txt", "x\n")
    dead = f"grpc://127.0.0.1:{free_port()}"
    flags = [*grid.flags, "--remote-executor", dead, "--remote-timeout", "5",
             "--remote-retry-backoff", "0.01"]
    r = ws.run("build", *flags, "//p:one")
    assert r.code == 1
    assert f"remote execution on {dead} failed after 4 attempts (UNAVAILABLE" in r.err, r.err
    assert "p/BUILD.pyimg:1:1" in r.err
    r = ws.run("build", *flags, "--remote-local-fallback", "//p:one")
    assert r.code == 0, r.err
    assert r.err.count("it runs locally (--remote-local-fallback)") == 1
    assert "0 actions ran remotely, 1 fell back to local" in r.err
    assert ws.out("p/one.txt").read_text() == "x\n"
