"""The bundled example builds, validates, unpacks as declared, runs in podman, and is reproducible."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from pyimg.oci.validate import validate_layout
from realtools import podman_env, require, skopeo_digest, umoci_unpack
from workspace_helpers import REPO, Workspace

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    require("gcc", "aarch64-linux-gnu-gcc")
    root = tmp_path_factory.mktemp("example")
    shutil.copytree(REPO / "examples", root / "ws", ignore=shutil.ignore_patterns("pyimg-out"))
    ws = Workspace(root / "ws", root / "cache")
    r = ws.run("build", "//...")
    assert r.code == 0, r.err
    ws.stdout = r.out  # type: ignore[attr-defined]
    return ws


def _digests(out: str) -> dict[str, str]:
    return {line.split()[0]: line.split()[1] for line in out.splitlines() if line.startswith("//")}


def test_build_example_matches_the_top_level_file():
    assert (REPO / "BUILD.example").read_text() == (REPO / "examples/app/BUILD.pyimg").read_text()


def test_every_output_validates_and_skopeo_agrees(example):
    require("skopeo")
    digests = _digests(example.stdout)
    assert set(digests) == {"//app:image", "//app:image_arm64", "//app:index", "//base:static"}
    for label, digest in digests.items():
        layout = example.root / "pyimg-out" / label[2:].replace(":", "/")
        validate_layout(layout)
        assert (layout.parent / (layout.name + ".digest")).read_text().strip() == digest
        assert skopeo_digest(layout) == digest


def test_unpacked_tree_is_what_the_build_file_declares(example, tmp_path):
    require("umoci")
    root = umoci_unpack(example.out("app/image"), tmp_path / "bundle")
    server = root / "app/bin/server"
    assert server.stat().st_mode & 0o777 == 0o755
    assert (root / "srv/www/index.html").read_text() == "<h1>Built by pyimg, bit for bit.</h1>\n"
    assert (root / "srv/www/style.css").stat().st_mode & 0o777 == 0o444
    assert (root / "srv/www/healthcheck.sh").stat().st_mode & 0o777 == 0o755
    assert (root / "srv/www/home.html").is_symlink()
    assert (root / "srv/www/home.html").readlink() == Path("index.html")
    assert (root / "etc/passwd").read_text().startswith("root:x:0:0")  # from the pinned base
    assert (root / "tmp").stat().st_mode & 0o7777 == 0o1777


def test_layer_owners_are_declared(example, tmp_path):
    import tarfile

    from pyimg.oci.layout import Layout

    layout = Layout(example.out("app/image"))
    manifest = layout.manifest(layout.resolve("latest"))
    owners = {}
    for desc in manifest.layers:
        with tarfile.open(layout.blob_path(desc.digest)) as tar:
            for m in tar.getmembers():
                owners[m.name] = (m.uid, m.gid, m.uname, m.gname, m.mtime)
    assert owners["app/bin/server"] == (0, 0, "", "", 0)
    assert owners["srv/www/index.html"] == (1000, 1000, "", "", 0)


def test_runs_in_podman(example, tmp_path):
    require("podman", "runc")
    env = podman_env(tmp_path / "podman")
    load = subprocess.run(["podman", "load", "-i", str(example.out("app/load.tar"))],
                          env=env, capture_output=True, text=True)
    assert load.returncode == 0, load.stderr
    run = subprocess.run(["podman", "run", "--rm", "example.local/pyimg-app:latest", "x"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "hello from the pyimg example (uid 1000)",
        "PATH=/app/bin:/usr/local/bin:/usr/bin:/bin",
        "page: <h1>Built by pyimg, bit for bit.</h1>",
        "arg: x",
    ]


def test_pyimg_run_loads_into_podman(example, tmp_path, monkeypatch):
    require("podman", "runc")
    for k, v in podman_env(tmp_path / "podman").items():
        monkeypatch.setenv(k, v)
    r = example.run("run", "//app:load")
    assert r.code == 0, r.err
    images = subprocess.run(["podman", "images", "--format", "{{.Repository}}"],
                            capture_output=True, text=True, check=True).stdout
    assert "example.local/pyimg-app" in images
