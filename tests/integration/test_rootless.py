"""Rootless builds: as an ordinary user, actions still run sandboxed and layers still say 0:0.

`.ci/run` runs this file (with the build, cache and sandbox tests) a second time as an unprivileged
user, with PYIMG_EXPECT_UNPRIVILEGED=1 so that a run that silently stayed root fails.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile

import pytest
from workspace_helpers import Workspace


def test_runs_as_the_user_ci_asked_for() -> None:
    if not os.environ.get("PYIMG_EXPECT_UNPRIVILEGED"):
        pytest.skip("only meaningful in the unprivileged CI run")
    assert os.geteuid() != 0 and os.getegid() != 0


def _layers(layout) -> list[tarfile.TarFile]:
    index = json.loads((layout / "index.json").read_text())

    def blob(digest: str) -> bytes:
        return (layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()

    manifest = json.loads(blob(index["manifests"][0]["digest"]))
    tars = []
    for layer in manifest["layers"]:
        data = blob(layer["digest"])
        if layer["mediaType"].endswith("gzip"):
            data = gzip.decompress(data)
        tars.append(tarfile.open(fileobj=io.BytesIO(data)))
    return tars


def test_image_layers_carry_declared_owners_whoever_builds(ws: Workspace) -> None:
    ws.write(
        "p/BUILD.pyimg",
        """
        genrule(name = "gen", outs = ["hello.txt"], cmd = "id -u > $@; echo hello >> $@")
        pkg_tar(name = "root_layer", srcs = [":gen"], package_dir = "/app")
        pkg_tar(name = "user_layer", srcs = [":gen"], package_dir = "/home/app", owner = "1000.1000")
        oci_image(name = "image", tars = [":root_layer", ":user_layer"], entrypoint = ["/bin/true"])
    """,
    )
    r = ws.run("build", "//p:image", "//p:gen")
    assert r.code == 0, r.err
    # The command ran as root of its user namespace; the file it wrote belongs to the real user.
    hello = ws.out("p/hello.txt")
    assert hello.read_text() == "0\nhello\n"
    assert hello.stat().st_uid == os.geteuid()
    root_layer, user_layer = _layers(ws.out("p/image"))
    for member in root_layer.getmembers():
        assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", ""), member.name
    for member in user_layer.getmembers():
        if member.name.startswith("home/app/"):
            assert (member.uid, member.gid) == (1000, 1000), member.name
    assert root_layer.extractfile("app/hello.txt").read().endswith(b"hello\n")
