"""Images built by the builtins, read by real tools: skopeo (oci: and docker-archive:) and umoci."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from pyimg.actions import BuiltinCall, load_builtins
from pyimg.core.digest import digest_file
from pyimg.oci.validate import validate_layout

pytestmark = pytest.mark.slow

SKOPEO = shutil.which("skopeo")
UMOCI = shutil.which("umoci")


def _run(
    kind: str,
    root: Path,
    params: dict,
    inputs: list[str],
    outputs: list[str],
    dirs: tuple[str, ...] = (),
) -> None:
    ins = {p: root / p for p in inputs}
    digests = {p: digest_file(root / p)[0] for p in inputs if (root / p).is_file()}
    outs = {p: root / p for p in [*outputs, *dirs]}
    for p in outs.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    load_builtins()[kind](BuiltinCall(params, ins, digests, outs, frozenset(dirs), 2))


def _build(root: Path, compression: str) -> str:
    (root / "src").mkdir(parents=True)
    (root / "src/hello.txt").write_text("hello\n")
    (root / "src/run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "src/run.sh", 0o755)
    entries = [
        {"path": "app/hello.txt", "src": "src/hello.txt"},
        {"path": "app/bin/run", "src": "src/run.sh"},
        {"path": "app/secret", "src": "src/hello.txt", "mode": "0600"},
        {"path": "app/hard", "type": "hardlink", "target": "app/hello.txt"},
        {"path": "app/" + "ü" * 120, "src": "src/hello.txt"},
    ]
    params = {"entries": entries, "symlinks": {"app/link": "hello.txt"}, "empty_dirs": ["data"]}
    _run("pkg_tar", root, params, ["src/hello.txt", "src/run.sh"], ["out/l.tar"])
    _run(
        "oci_layer", root, {"compression": compression}, ["out/l.tar"], ["out/l.blob", "out/l.json"]
    )
    _run(
        "oci_image",
        root,
        {
            "layers": ["out/l.json"],
            "blobs": ["out/l.blob"],
            "config": {"entrypoint": ["/app/bin/run"]},
        },
        ["out/l.json", "out/l.blob"],
        ["out/img.digest"],
        dirs=("out/img",),
    )
    validate_layout(root / "out/img")
    return (root / "out/img.digest").read_text()


@pytest.mark.skipif(SKOPEO is None, reason="skopeo not installed")
@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_skopeo_inspects_layout_and_docker_archive(tmp_path: Path, compression: str) -> None:
    digest = _build(tmp_path, compression)
    out = subprocess.run(
        [SKOPEO, "inspect", f"oci:{tmp_path / 'out/img'}:latest"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert json.loads(out.stdout)["Digest"] == digest
    _run("oci_load", tmp_path, {"repo_tags": ["example.com/app:1"]}, ["out/img"], ["out/load.tar"])
    # skopeo copy reads every blob of the archive and checks it against the config's diff_ids.
    subprocess.run(
        [
            SKOPEO,
            "copy",
            "--quiet",
            f"docker-archive:{tmp_path / 'out/load.tar'}",
            f"oci:{tmp_path / 'copy'}:x",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    out = subprocess.run(
        [SKOPEO, "inspect", f"docker-archive:{tmp_path / 'out/load.tar'}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert json.loads(out.stdout)["Os"] == "linux"


@pytest.mark.skipif(UMOCI is None, reason="umoci not installed")
def test_umoci_unpacks_the_declared_tree(tmp_path: Path) -> None:
    _build(tmp_path, "gzip")  # umoci does not read zstd layers
    bundle = tmp_path / "bundle"
    subprocess.run(
        [UMOCI, "unpack", "--rootless", "--image", f"{tmp_path / 'out/img'}:latest", str(bundle)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    rootfs = bundle / "rootfs"
    assert (rootfs / "app/hello.txt").read_text() == "hello\n"
    assert (rootfs / "app/bin/run").stat().st_mode & 0o7777 == 0o755
    assert (rootfs / "app/hello.txt").stat().st_mode & 0o7777 == 0o644
    assert (rootfs / "app/secret").stat().st_mode & 0o7777 == 0o600
    assert os.readlink(rootfs / "app/link") == "hello.txt"
    assert (rootfs / "app/hard").stat().st_ino == (rootfs / "app/hello.txt").stat().st_ino
    assert (rootfs / ("app/" + "ü" * 120)).read_text() == "hello\n"
    assert (rootfs / "data").is_dir() and not any((rootfs / "data").iterdir())
    config = json.loads((bundle / "config.json").read_text())
    assert config["process"]["args"] == ["/app/bin/run"]


def test_oci_load_of_an_index_loads_the_host_image_into_podman(ws, tmp_path: Path) -> None:
    """An oci_load of an index holds this machine's image (or the one `platform` names); podman
    loads it and it runs."""
    from pyimg.oci.platforms import host_platform
    from realtools import podman_env, require

    require("podman", "runc", "busybox")
    host = host_platform()
    other = "s390x" if host.architecture != "s390x" else "amd64"
    (ws.root / "p").mkdir(parents=True)
    (ws.root / "p/busybox").write_bytes(Path(shutil.which("busybox") or "").read_bytes())
    (ws.root / "p/busybox").chmod(0o755)
    ws.write("p/host.txt", "host image\n")
    ws.write("p/other.txt", "other image\n")
    variant = f', variant = "{host.variant}"' if host.variant else ""
    ws.write("p/BUILD.pyimg", f"""
        pkg_tar(name = "bin", srcs = ["busybox"], package_dir = "/bin")
        pkg_tar(name = "host_mark", files = {{"host.txt": "which.txt"}})
        pkg_tar(name = "other_mark", files = {{"other.txt": "which.txt"}})
        oci_image(name = "host", tars = [":bin", ":host_mark"], architecture = "{host.architecture}"{variant},
                  entrypoint = ["/bin/busybox", "cat", "/which.txt"])
        oci_image(name = "other", tars = [":bin", ":other_mark"], architecture = "{other}",
                  entrypoint = ["/bin/busybox", "cat", "/which.txt"])
        oci_image_index(name = "index", images = [":other", ":host"])
        oci_load(name = "load", image = ":index", repo_tags = ["example.local/idx:host"])
        oci_load(name = "load_other", image = ":index", repo_tags = ["example.local/idx:other"],
                 platform = "linux/{other}")
    """)
    r = ws.run("build", "//p:load", "//p:load_other")
    assert r.code == 0, r.err
    env = podman_env(tmp_path / "podman")
    for tar in ("load", "load_other"):
        load = subprocess.run(["podman", "load", "-i", str(ws.out(f"p/{tar}.tar"))],
                              env=env, capture_output=True, text=True, timeout=120)
        assert load.returncode == 0, load.stderr
    run = subprocess.run(["podman", "run", "--rm", "example.local/idx:host"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "host image\n"
    inspect = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Architecture}}", "example.local/idx:other"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )
    assert inspect.stdout.strip() == other
