"""Bytes that rot in the content store under an unchanged stat: `pyimg cache verify` finds and drops
them, materialization refuses them, and the next build makes the right bytes again."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path

import pytest
from pyimg.build.execution import RECHECK_ALWAYS_BYTES
from workspace_helpers import Workspace

BUILD = """
pkg_tar(name = "files", srcs = ["data.bin", "hello.txt"], package_dir = "/srv")
oci_image(name = "image", tars = [":files"], entrypoint = ["/bin/true"])
"""


@pytest.fixture
def built(ws: Workspace) -> tuple[Workspace, str]:
    # Incompressible, so that the layer is bigger than what materialization always re-hashes.
    ws.root.joinpath("app").mkdir()
    ws.root.joinpath("app/data.bin").write_bytes(random.Random(7).randbytes(2 * RECHECK_ALWAYS_BYTES))
    ws.write("app/hello.txt", "hello\n")
    ws.write("app/BUILD.pyimg", BUILD)
    r = ws.run("build", "//app:image")
    assert r.code == 0, r.err
    return ws, _digest(ws)


def _digest(ws: Workspace) -> str:
    return ws.out("app/image.digest").read_text().strip()


def _blobs(ws: Workspace, digest: str) -> dict[str, str]:
    """"config" and "layer" -> the hex of that blob of the image."""
    layout = ws.out("app/image")
    manifest = json.loads((layout / "blobs/sha256" / digest.split(":")[1]).read_bytes())
    return {"config": manifest["config"]["digest"].split(":")[1],
            "layer": manifest["layers"][0]["digest"].split(":")[1]}


def _store_path(ws: Workspace, hexd: str) -> Path:
    return ws.cache / "cas/sha256" / hexd[:2] / hexd


def _rot(path: Path) -> None:
    """Flip a byte in place, then give the file back its mode and mtime (size and inode never
    changed): the stat pyimg memoised as verified still matches."""
    st = path.stat()
    path.chmod(0o644)
    with open(path, "r+b") as f:
        f.seek(st.st_size // 2)
        b = f.read(1)
        f.seek(st.st_size // 2)
        f.write(bytes([b[0] ^ 0xFF]))
    path.chmod(st.st_mode & 0o7777)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _holds_its_name(path: Path) -> bool:
    return hashlib.sha256(path.read_bytes()).hexdigest() == path.name


def test_cache_verify_drops_a_rotten_blob_and_the_next_build_makes_it_again(built):
    ws, digest = built
    layer = _blobs(ws, digest)["layer"]
    assert _store_path(ws, layer).stat().st_size > RECHECK_ALWAYS_BYTES
    _rot(_store_path(ws, layer))

    r = ws.run("cache", "verify", "--disk-cache", str(ws.cache))
    assert r.code == 1, r.err
    assert f"corrupt: {_store_path(ws, layer)}: bytes do not match the digest; dropped" in r.out
    assert "1 corrupt" in r.err
    assert not _store_path(ws, layer).exists()

    r = ws.run("build", "//app:image")
    assert r.code == 0, r.err
    assert "0 actions run" not in r.err  # not a replay of the record of the rotten build
    assert _digest(ws) == digest
    assert _holds_its_name(ws.out(f"app/image/blobs/sha256/{layer}"))
    assert _holds_its_name(_store_path(ws, layer))

    r = ws.run("cache", "verify", "--disk-cache", str(ws.cache))
    assert r.code == 0, r.out + r.err
    assert "nothing corrupt" in r.err


def test_cache_verify_of_a_sound_cache_exits_0_and_keeps_everything(built):
    ws, _ = built
    before = sorted(p for p in ws.cache.rglob("*") if "output_bases" not in p.parts)
    r = ws.run("cache", "verify", "--disk-cache", str(ws.cache))
    assert (r.code, r.out) == (0, ""), r.err
    assert sorted(p for p in ws.cache.rglob("*") if "output_bases" not in p.parts) == before


@pytest.mark.parametrize("which", ["config", "layer"])  # a small JSON blob; a big cached layer
def test_materializing_a_rotten_blob_fails_and_the_next_build_repairs_it(built, which):
    ws, digest = built
    hexd = _blobs(ws, digest)[which]
    _rot(_store_path(ws, hexd))
    shutil.rmtree(ws.root / "pyimg-out")  # so that the build links its outputs out again

    r = ws.run("build", "//app:image")
    assert r.code == 1, r.err
    assert f"pyimg-out/app/image/blobs/sha256/{hexd}: blob sha256:{hexd}" in r.err
    assert "no longer holds the bytes of its digest" in r.err and "Traceback" not in r.err
    assert not _store_path(ws, hexd).exists()

    r = ws.run("build", "//app:image")
    assert r.code == 0, r.err
    assert _digest(ws) == digest
    assert _holds_its_name(ws.out(f"app/image/blobs/sha256/{hexd}"))


def test_an_http_file_whose_blob_was_dropped_is_fetched_again_not_read_emptied(tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_external_http import _Server, _sha, _tool_workspace

    (tmp_path / "www").mkdir()
    server = _Server(tmp_path / "www")
    try:
        (server.root / "tool.sh").write_text("#!/bin/sh\necho hi\n")
        sha = _sha(server.root / "tool.sh")
        ws = Workspace(tmp_path / "ws", tmp_path / "cache")
        _tool_workspace(ws, server, sha)
        assert ws.run("build", "//app:image").code == 0
        digest = _digest(ws)
        _rot(ws.cache / "cas/sha256" / sha[:2] / f"{sha}.x")

        assert ws.run("cache", "verify", "--disk-cache", str(ws.cache)).code == 1
        r = ws.run("build", "//app:image")
        assert r.code == 0, r.err
        assert _digest(ws) == digest  # the download again, not the emptied link to the old blob
        assert server.requests == ["/tool.sh", "/tool.sh"]
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_a_rotten_decoded_deb_is_dropped_by_cache_verify_and_decoded_again(ws: Workspace) -> None:
    # deb_layer keeps each .deb decoded in the repository cache (oci/deb.py): its data blob is
    # a store blob re-hashed by `cache verify`, and the entry naming it goes with it.
    from debian_fixtures import make_deb

    rules = 'load("@pyimg//rules:defs.bzl", "deb_layer", "oci_image")\n'
    ws.write("BUILD.pyimg", rules + 'deb_layer(name = "base", debs = glob(["debs/*.deb"]))\n'
             'oci_image(name = "image", tars = [":base"])\n')
    make_deb(ws.root / "debs", "tool", {"usr/bin/tool": (b"#!/bin/sh\n" * 64, 0o755)})
    r = ws.run("build", "//:image")
    assert r.code == 0, r.err
    digest = ws.out("image.digest").read_text()
    (entry,) = (ws.cache / "debs").glob("*.json")
    data = json.loads(entry.read_bytes())["body"]["data"]
    _rot(_store_path(ws, data))
    r = ws.run("cache", "verify", "--disk-cache", str(ws.cache))
    assert r.code == 1
    assert f"corrupt: {_store_path(ws, data)}: bytes do not match the digest" in r.out, r.out
    assert f"dropped: {entry}: names a data blob that is not in the store" in r.out, r.out
    assert not entry.exists()
    # A layer not built yet reads the package: decoded again from the .deb, the same bytes.
    ws.write("BUILD.pyimg", rules + 'deb_layer(name = "base", debs = glob(["debs/*.deb"]), mtime = 1)\n'
             'oci_image(name = "image", tars = [":base"])\n')
    r = ws.run("build", "//:image")
    assert r.code == 0, r.err
    assert ws.out("image.digest").read_text() != digest and entry.exists()
    assert ws.run("cache", "verify", "--disk-cache", str(ws.cache)).code == 0
