"""The remote cache's flow control against a real BuildGrid behind a loopback proxy
(tests/reapi_proxy.py): lookups waiting at once share their BatchReadBlobs calls and get the
same outputs; bytes a server inlines in its answers are not read again, and are refused when they
do not match their digests; a server that answers RESOURCE_EXHAUSTED (or UNAVAILABLE) a few times is waited
for, and the build still gets every action from it; one that stays unavailable is left aside
with one warning, and the build finishes locally."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from buildgrid import BuildGrid, Lane
from reapi_proxy import Proxy
from workspace_helpers import Workspace

pytestmark = pytest.mark.slow

# Independent actions: all of them are looked up at once.
TARGETS = 40
MANY = "".join(f'genrule(name = "t{n}", outs = ["t{n}.txt"], cmd = "echo output {n} > $@")\n'
               for n in range(TARGETS))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    grid = BuildGrid(tmp_path_factory.mktemp("buildgrid")).start()
    yield grid
    grid.stop()


@pytest.fixture(scope="module")
def warm(server: BuildGrid, tmp_path_factory: pytest.TempPathFactory):
    """The server warmed with MANY by a first build (the tests' builds only read it); and that
    build's workspace."""
    grid = Lane(server, server.instance)
    root = tmp_path_factory.mktemp("first")
    first = Workspace(root / "ws", root / "cache")
    first.write("p/BUILD.pyimg", MANY)
    r = first.run("build", *grid.flags, "//p:all")
    assert r.code == 0 and f"{TARGETS} results uploaded" in r.err, r.err
    return grid, first


def _second(tmp_path: Path, proxy: Proxy, grid) -> tuple[Workspace, object]:
    ws = Workspace(tmp_path / "second", tmp_path / "second-cache")
    ws.write("p/BUILD.pyimg", MANY)
    return ws, ws.run("build", *grid.flags_via(proxy.url), "//p:all")


def _same_outputs(a: Workspace, b: Workspace) -> None:
    for n in range(TARGETS):
        assert b.out(f"p/t{n}.txt").read_bytes() == a.out(f"p/t{n}.txt").read_bytes() \
            == f"output {n}\n".encode()


def test_lookups_at_once_share_their_batch_reads(tmp_path, warm):
    grid, first = warm
    proxy = Proxy(grid.url, tmp_path / "proxy").start()
    try:
        proxy.delay = 0.05  # a server some way off: lookups overlap as they would over a network
        second, r = _second(tmp_path, proxy, grid)
    finally:
        proxy.stop()
    assert r.code == 0, r.err
    assert f"{TARGETS} hits, 0 misses" in r.err and "WARNING" not in r.err, r.err
    assert proxy.calls["GetActionResult"] == TARGETS
    # One BatchReadBlobs per hit before; the hits waiting at once now share them.
    assert proxy.calls["BatchReadBlobs"] <= TARGETS // 2, proxy.calls
    assert proxy.calls["GetCapabilities"] == 1  # the batch size, asked once
    _same_outputs(first, second)


def test_bytes_inlined_in_the_answer_are_not_read_again(tmp_path, warm):
    grid, first = warm
    proxy = Proxy(grid.url, tmp_path / "proxy").start()
    try:
        proxy.inline = True
        second, r = _second(tmp_path, proxy, grid)
    finally:
        proxy.stop()
    assert r.code == 0, r.err
    assert f"{TARGETS} hits, 0 misses" in r.err and "WARNING" not in r.err, r.err
    assert proxy.calls["GetActionResult"] == TARGETS and proxy.calls["BatchReadBlobs"] == 0
    _same_outputs(first, second)


def test_inlined_bytes_that_do_not_match_are_refused(tmp_path, warm):
    grid, first = warm
    proxy = Proxy(grid.url, tmp_path / "proxy").start()
    try:
        proxy.inline = proxy.corrupt_reads = True
        second, r = _second(tmp_path, proxy, grid)
    finally:
        proxy.stop()
    assert r.code == 0, r.err
    assert r.err.count("refused the result of") == TARGETS and "came back as" in r.err, r.err
    assert f"Build completed: {TARGETS} actions run" in r.err, r.err
    _same_outputs(first, second)


@pytest.mark.parametrize("code", [grpc.StatusCode.RESOURCE_EXHAUSTED,
                                  grpc.StatusCode.UNAVAILABLE])
def test_a_busy_server_is_waited_for(tmp_path, warm, code):
    grid, first = warm
    proxy = Proxy(grid.url, tmp_path / "proxy").start()
    try:
        proxy.busy_code = code
        proxy.busy.update({"GetActionResult": 4, "BatchReadBlobs": 3})
        second, r = _second(tmp_path, proxy, grid)
    finally:
        proxy.stop()
    assert r.code == 0, r.err
    assert f"{TARGETS} hits, 0 misses" in r.err and "WARNING" not in r.err, r.err
    assert proxy.busy["GetActionResult"] == proxy.busy["BatchReadBlobs"] == 0  # all refused
    assert "0 actions run" in r.err, r.err
    _same_outputs(first, second)


def test_a_server_that_stays_unavailable_is_left_aside_with_one_warning(tmp_path, warm):
    grid, first = warm
    proxy = Proxy(grid.url, tmp_path / "proxy").start()
    try:
        proxy.busy_code = grpc.StatusCode.UNAVAILABLE
        proxy.busy.update({"GetActionResult": 10**6})
        second, r = _second(tmp_path, proxy, grid)
    finally:
        proxy.stop()
    assert r.code == 0, r.err
    assert r.err.count("WARNING: remote cache") == 1, r.err
    assert "failed (UNAVAILABLE: busy (the test proxy))" in r.err, r.err
    assert f"Build completed: {TARGETS} actions run" in r.err, r.err
    _same_outputs(first, second)
