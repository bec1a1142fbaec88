"""The remote cache under faults, auth and secrets, with a real BuildGrid behind a loopback proxy
(tests/reapi_proxy.py): corrupt blobs are refused and the action runs locally; an upload cut
halfway is retried; a slow server is left aside after one warning; a TLS server with a token refuses a wrong one with a clear warning and never
sees the token in a log; an action with secrets leaves nothing in the remote CAS; a rebuild after
one edit uploads only that action's output (and BuildGrid's ActionResult)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from buildgrid import BuildGrid
from pyimg.remote._proto.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from reapi_proxy import Proxy
from workspace_helpers import Workspace

pytestmark = pytest.mark.slow

BIG = """\
genrule(name = "big", outs = ["big.bin"], cmd = "yes pyimg | head -c 2500000 > $@")
genrule(name = "small", srcs = [":big"], outs = ["small.txt"], cmd = "wc -c < $< > $@")
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """One BuildGrid for the module (its start-up is most of a test's time)."""
    grid = BuildGrid(tmp_path_factory.mktemp("buildgrid"), on_disk=True, lanes=7).start()
    yield grid
    grid.stop()


@pytest.fixture
def grid(server: BuildGrid):
    """A clean instance of the module's server."""
    return server.lane()


def _ws(tmp_path: Path, name: str, build: str = BIG) -> Workspace:
    ws = Workspace(tmp_path / name, tmp_path / f"{name}-cache")
    ws.write("p/BUILD.pyimg", build)
    return ws


def test_corrupt_blobs_are_refused_and_the_actions_run_locally(tmp_path, grid):
    a = _ws(tmp_path, "a")
    assert a.run("build", *grid.flags, "//p:small").code == 0
    proxy = Proxy(grid.url, tmp_path / "proxy").start()
    try:
        proxy.corrupt_reads = True
        b = _ws(tmp_path, "b")
        r = b.run("build", *grid.flags_via(proxy.url), "//p:small")
    finally:
        proxy.stop()
    assert r.code == 0, r.err
    assert "Build completed: 2 actions run" in r.err, r.err
    assert r.err.count("refused the result of") == 2 and "came back as" in r.err
    assert "2 results refused" in r.err
    assert b.out("p/small.txt").read_bytes() == a.out("p/small.txt").read_bytes() == b"2500000\n"


def test_a_slow_cache_is_left_aside_after_one_warning(tmp_path, grid):
    proxy = Proxy(grid.url, tmp_path / "proxy").start()
    try:
        proxy.delay = 2.0
        a = _ws(tmp_path, "a")
        r = a.run("build", *grid.flags_via(proxy.url), "--remote-timeout", "0.5", "//p:small")
    finally:
        proxy.stop()
    assert r.code == 0, r.err
    assert r.err.count("WARNING: remote cache") == 1
    assert "DEADLINE_EXCEEDED" in r.err and "no answer within --remote-timeout=0.5s" in r.err
    assert "Build completed: 2 actions run" in r.err
    assert a.out("p/small.txt").read_bytes() == b"2500000\n"


# Bytes no other test's action makes: the lanes share one CAS, where the upload would be found.
UNIQUE_BIG = BIG.replace("yes pyimg", "yes upload-cut")


def test_an_upload_cut_halfway_is_retried(tmp_path, grid):
    proxy = Proxy(grid.url, tmp_path / "proxy").start()
    try:
        proxy.break_writes = 1
        a = _ws(tmp_path, "a", UNIQUE_BIG)
        r = a.run("build", *grid.flags_via(proxy.url), "//p:small")
    finally:
        proxy.stop()
    assert r.code == 0, r.err
    assert proxy.broken_writes == 1
    assert "WARNING" not in r.err and "2 results uploaded" in r.err, r.err
    b = _ws(tmp_path, "b", UNIQUE_BIG)
    r2 = b.run("build", *grid.flags, "//p:small")
    assert r2.code == 0 and "2 hits" in r2.err, r2.err
    assert b.out("p/small.txt").read_bytes() == a.out("p/small.txt").read_bytes() == b"2500000\n"


def test_tls_with_a_token(tmp_path, grid):
    token = "tok-" + "7" * 24
    proxy = Proxy(grid.url, tmp_path / "proxy", tls=True, token=token).start()
    try:
        flags = [*grid.flags_via(proxy.url), "--remote-ca-file", str(proxy.ca_file)]
        a = _ws(tmp_path, "a")
        wrong = a.run("build", *flags, "--remote-header", "authorization=Bearer nope",
                      "--verbose", "//p:small")
        assert wrong.code == 0, wrong.err
        assert wrong.err.count("WARNING: remote cache") == 1
        assert "UNAUTHENTICATED" in wrong.err and "--remote-header" in wrong.err
        b = _ws(tmp_path, "b")
        right = b.run("build", *flags, "--remote-header", f"authorization=Bearer {token}",
                      "--verbose", "//p:small")
        assert right.code == 0, right.err
        assert "WARNING" not in right.err and "2 results uploaded" in right.err
        assert token not in right.out + right.err
        c = _ws(tmp_path, "c")
        hit = c.run("build", *flags, "--remote-header", f"authorization=Bearer {token}",
                    "//p:small")
        assert hit.code == 0 and "2 hits" in hit.err, hit.err
    finally:
        proxy.stop()
    assert ("authorization", f"Bearer {token}") in proxy.seen_headers
    # Nothing pyimg keeps on disk holds the token.
    for root in (b.root, b.cache, c.root, c.cache):
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert token.encode() not in path.read_bytes(), path


SECRET = """\
genrule(name = "plain", outs = ["plain.txt"], cmd = "echo plain > $@")
genrule(name = "uses", srcs = [":plain"], outs = ["uses.txt"], secrets = ["npm_token"],
        cmd = "wc -c < $$PYIMG_SECRET_npm_token > $@; cat $< >> $@")
"""


def test_an_action_with_secrets_leaves_nothing_in_the_remote_cas(tmp_path, grid):
    value = b"s3cr3t-value-that-must-stay-home"
    secret = tmp_path / "token"
    secret.write_bytes(value)
    ws = _ws(tmp_path, "ws", SECRET)
    r = ws.run("build", *grid.flags, "--secret", f"id=npm_token,src={secret}",
               "//p:uses")
    assert r.code == 0, r.err
    assert "1 misses, 1 results uploaded" in r.err  # only //p:plain went out
    blobs = [p for p in (grid.workdir / "cas").rglob("*") if p.is_file()]
    assert blobs
    uses = ws.out("p/uses.txt").read_bytes()
    for blob in blobs:
        data = blob.read_bytes()
        assert value not in data and uses not in data, blob


EDITED = """\
genrule(name = "edited", srcs = ["a.txt"], outs = ["edited.out"], cmd = "cat $< > $@; echo e >> $@")
genrule(name = "other", srcs = ["b.txt"], outs = ["other.out"], cmd = "cat $< > $@")
"""


def _cas_blobs(grid) -> set[str]:
    """The sha256 of every blob in the server's CAS (shared by its lanes)."""
    return {hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (grid.workdir / "cas").rglob("*") if p.is_file()}


def _cas_blob(grid, sha256: str) -> bytes:
    for p in (grid.workdir / "cas").rglob("*"):
        if p.is_file() and hashlib.sha256(p.read_bytes()).hexdigest() == sha256:
            return p.read_bytes()
    raise AssertionError(f"no blob {sha256}")


def test_a_rebuild_after_one_edit_uploads_only_that_actions_outputs(tmp_path, grid):
    ws = _ws(tmp_path, "ws", EDITED)
    ws.write("p/a.txt", "one\n")
    ws.write("p/b.txt", "two\n")
    assert ws.run("build", *grid.flags, "//p:all").code == 0
    before = _cas_blobs(grid)
    ws.write("p/a.txt", "one, edited\n")
    r = ws.run("build", *grid.flags, "//p:all")
    assert r.code == 0, r.err
    assert "1 misses, 1 results uploaded" in r.err, r.err
    # Not its Action, Command, input-root Directories nor its source: the output, and the
    # ActionResult that BuildGrid's action cache keeps in its CAS.
    output = ws.out("p/edited.out").read_bytes()
    assert output == b"one, edited\ne\n"
    new = _cas_blobs(grid) - before
    output_hash = hashlib.sha256(output).hexdigest()
    assert output_hash in new and len(new) == 2, new
    (entry,) = new - {output_hash}
    result = re_pb2.ActionResult.FromString(_cas_blob(grid, entry))
    assert [(f.path, f.digest.hash) for f in result.output_files] == [("pyimg-out/p/edited.out", output_hash)]


OPTED_IN = """\
genrule(name = "fetched", outs = ["fetched.txt"], secrets = ["npm_token"],
        remote_cache_secrets = True,
        cmd = "test -s $$PYIMG_SECRET_npm_token && echo fetched with a token > $@")
"""


def test_an_action_that_opts_in_caches_only_its_outputs_remotely(tmp_path, grid):
    value = b"s3cr3t-value-opted-in-but-never-sent"
    secret = tmp_path / "token"
    secret.write_bytes(value)
    before = _cas_blobs(grid)
    first = _ws(tmp_path, "first", OPTED_IN)
    r = first.run("build", *grid.flags, "--secret", f"id=npm_token,src={secret}", "//p:fetched")
    assert r.code == 0, r.err
    assert "0 hits, 1 misses, 1 results uploaded" in r.err, r.err
    output = first.out("p/fetched.txt").read_bytes()
    new = _cas_blobs(grid) - before
    assert hashlib.sha256(output).hexdigest() in new and len(new) == 2, new  # + ActionResult
    for blob in (grid.workdir / "cas").rglob("*"):
        if blob.is_file():
            assert value not in blob.read_bytes(), blob
    # Another machine, whose secret has another value, gets the result from the remote cache.
    other = tmp_path / "other-token"
    other.write_bytes(b"another value")
    second = _ws(tmp_path, "second", OPTED_IN)
    r = second.run("build", *grid.flags, "--secret", f"id=npm_token,src={other}", "//p:fetched")
    assert r.code == 0, r.err
    assert "1 hits, 0 misses" in r.err and "0 actions run" in r.err, r.err
    assert second.out("p/fetched.txt").read_bytes() == output
