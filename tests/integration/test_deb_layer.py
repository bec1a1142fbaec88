"""deb_layer through the CLI: bad packages refused without a traceback, one digest whatever the
path and umask, and an image of Debian packages unpacked by umoci and run by podman."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from debian_fixtures import (
    Archive,
    Deb,
    SigningKey,
    make_deb,
    make_raw_deb,
    require_tools,
    serve,
)
from realtools import podman_env, require, umoci_unpack
from workspace_helpers import Workspace

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")

BUILD = """\
load("@pyimg//rules:defs.bzl", "deb_layer", "oci_image", "oci_load")

deb_layer(
    name = "base",
    debs = glob(["debs/*.deb"]),
    users = {"app": "1000"},
    mtime = 1700000000,
)

oci_image(
    name = "image",
    tars = [":base"],
    entrypoint = ["/bin/busybox"],
    user = "app",
)

oci_load(name = "load", image = ":image", repo_tags = ["deb.local/base:latest"])
"""


def _cached(pattern: str) -> Path | None:
    """A real Debian package from apt's cache on this machine, when there is one."""
    found = sorted(glob.glob(f"/var/cache/apt/archives/{pattern}"))
    return Path(found[-1]) if found else None


def _debs(dest: Path) -> None:
    """busybox (the real busybox-static package when apt has it cached, else one made here from
    the host's static busybox), tzdata when cached, and a small package of our own."""
    dest.mkdir(parents=True, exist_ok=True)
    real = _cached("busybox-static_*_amd64.deb")
    if real is not None:
        shutil.copy(real, dest / "busybox-static.deb")
    else:
        host = shutil.which("busybox")
        if host is None:
            pytest.skip("neither a cached busybox-static .deb nor a busybox binary")
        make_deb(dest, "busybox-static", {"bin/busybox": (Path(host).read_bytes(), 0o755)})
    tzdata = _cached("tzdata_*_all.deb")
    if tzdata is not None:
        shutil.copy(tzdata, dest / "tzdata.deb")
    make_deb(
        dest,
        "hello-conf",
        {"etc/hello.conf": b"greeting=hi\n", "usr/share/doc/hello-conf/copyright": b"MIT\n"},
        compression="zstd",
    )


def _workspace(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "MODULE.pyimg").write_text("")
    (root / "BUILD.pyimg").write_text(BUILD)
    _debs(root / "debs")
    return root


def test_a_device_node_is_refused_naming_package_and_path(ws: Workspace) -> None:
    ws.write("BUILD.pyimg", BUILD)
    node = tarfile.TarInfo("./dev/sda")
    node.type = tarfile.BLKTYPE
    (ws.root / "debs").mkdir()
    make_raw_deb(ws.root / "debs" / "disk_1.0_amd64.deb", "disk", [node])
    r = ws.run("build", "//:base")
    assert r.code != 0
    assert "Traceback" not in r.err
    assert "debs/disk_1.0_amd64.deb (package disk)" in r.err and "'dev/sda' is a device" in r.err


def test_conflicting_packages_refused_naming_both(ws: Workspace) -> None:
    ws.write("BUILD.pyimg", BUILD)
    make_deb(ws.root / "debs", "one", {"etc/x": b"1"})
    make_deb(ws.root / "debs", "two", {"etc/x": b"2"})
    r = ws.run("build", "//:image")
    assert r.code != 0 and "Traceback" not in r.err
    assert "/etc/x is in packages 'one'" in r.err and "'two'" in r.err


PLATFORM_BUILD = """\
load("@pyimg//rules:defs.bzl", "deb_layer", "oci_image")

deb_layer(
    name = "base",
    debs = glob(["debs/*.deb"]),
)

oci_image(
    name = "image",
    tars = [":base"],
    architecture = "arm64",
)
"""


def test_packages_of_another_architecture_than_the_platform_are_refused(ws: Workspace) -> None:
    # Built for arm64, amd64 packages: an error naming the package, the architecture its control
    # file gives and the platform.
    ws.write("BUILD.pyimg", PLATFORM_BUILD)
    make_deb(ws.root / "debs", "tool", {"usr/bin/tool": b"x"}, arch="amd64")
    r = ws.run("build", "--platforms", "linux/arm64", "//:base")
    assert r.code != 0 and "Traceback" not in r.err, r.err
    assert "BUILD.pyimg:3:1" in r.err, r.err
    assert "debs/tool_1.0_amd64.deb is a package of Debian architecture amd64" in r.err, r.err
    assert "the platform is linux/arm64" in r.err, r.err


def test_the_architecture_is_the_control_files_not_the_file_names(ws: Workspace) -> None:
    # A package of arm64 named as amd64 is refused for linux/amd64 (and not for arm64); one of
    # amd64 named as arm64 is built for linux/amd64: the control `Architecture` field decides.
    ws.write("BUILD.pyimg", PLATFORM_BUILD)
    made = make_deb(ws.root / "debs", "tool", {"usr/bin/tool": b"x"}, arch="arm64")
    made.rename(ws.root / "debs" / "tool_1.0_amd64.deb")
    r = ws.run("build", "--platforms", "linux/amd64", "//:base")
    assert r.code != 0 and "Traceback" not in r.err, r.err
    assert "debs/tool_1.0_amd64.deb is a package of Debian architecture arm64" in r.err, r.err
    assert "Architecture: arm64" in r.err and "the platform is linux/amd64" in r.err, r.err
    assert ws.run("build", "--platforms", "linux/arm64", "//:base").code == 0
    for deb in (ws.root / "debs").glob("*.deb"):
        deb.unlink()
    made = make_deb(ws.root / "debs", "tool", {"usr/bin/tool": b"x"}, arch="amd64")
    made.rename(ws.root / "debs" / "tool_1.0_arm64.deb")
    r = ws.run("build", "--platforms", "linux/amd64", "//:base")
    assert r.code == 0, r.err


def test_packages_of_another_architecture_than_the_image_fail_analysis(ws: Workspace) -> None:
    # A plain build of an image labelled arm64 over a layer of amd64 packages: an error at the
    # image's `tars`, naming both; Architecture: all packages fit any image.
    ws.write("BUILD.pyimg", PLATFORM_BUILD)
    make_deb(ws.root / "debs", "conf", {"etc/conf": b"x"}, arch="all")
    assert ws.run("build", "//:image").code == 0
    make_deb(ws.root / "debs", "tool", {"usr/bin/tool": b"x"}, arch="amd64")
    r = ws.run("build", "//:image")
    assert r.code != 0 and "Traceback" not in r.err, r.err
    assert "BUILD.pyimg:10:5" in r.err and "//:base" in r.err, r.err
    assert "Debian architecture amd64" in r.err and "the image is for linux/arm64" in r.err, r.err


def test_packages_of_two_architectures_in_one_layer_are_refused(ws: Workspace) -> None:
    # Read from the control files: here the file names say nothing of the architecture.
    ws.write("BUILD.pyimg", PLATFORM_BUILD)
    make_deb(ws.root / "debs", "one", {"etc/one": b"1"}, arch="amd64").rename(ws.root / "debs/one.deb")
    make_deb(ws.root / "debs", "two", {"etc/two": b"2"}, arch="arm64").rename(ws.root / "debs/two.deb")
    r = ws.run("build", "//:base")
    assert r.code != 0 and "Traceback" not in r.err, r.err
    assert "BUILD.pyimg:3:1" in r.err and "packages of two architectures" in r.err, r.err
    assert "one.deb (Architecture: amd64)" in r.err and "two.deb (Architecture: arm64)" in r.err, r.err


def test_architecture_all_packages_fit_a_requested_platform(ws: Workspace) -> None:
    ws.write("BUILD.pyimg", PLATFORM_BUILD)
    make_deb(ws.root / "debs", "conf", {"etc/conf": b"x"}, arch="all")
    r = ws.run("build", "--platforms", "linux/arm64", "//:image")
    assert r.code == 0, r.err


def _cli_build(ws: Path, cache: Path, umask: int) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYIMG", "SOURCE_DATE"))}
    proc = subprocess.run(
        [sys.executable, "-m", "pyimg.cli.main", "build", "--disk-cache", str(cache), "//:image"],
        cwd=ws, env=env, capture_output=True, text=True, preexec_fn=lambda: os.umask(umask),
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.slow
def test_same_digest_under_another_path_and_umask(tmp_path: Path) -> None:
    a = _workspace(tmp_path / "a")
    b = tmp_path / "else" / "where" / "b"
    shutil.copytree(a, b)
    for deb in (b / "debs").iterdir():
        deb.chmod(0o600)
        os.utime(deb, (1, 1))
    out_a = _cli_build(a, tmp_path / "cache-a", 0o022)
    out_b = _cli_build(b, tmp_path / "cache-b", 0o077)
    assert "sha256:" in out_a and out_a == out_b


@pytest.mark.slow
def test_umoci_unpacks_and_podman_runs(tmp_path: Path) -> None:
    require("umoci", "podman", "runc")
    ws = Workspace(_workspace(tmp_path / "ws"), tmp_path / "cache")
    r = ws.run("build", "//:image", "//:load")
    assert r.code == 0, r.err
    rootfs = umoci_unpack(ws.out("image"), tmp_path / "unpacked")
    assert (rootfs / "var/lib/dpkg/status.d/busybox-static").read_text().startswith(
        "Package: busybox-static\n"
    )
    assert (rootfs / "usr/share/doc/busybox-static/copyright").is_file()
    assert (rootfs / "etc/passwd").read_text().splitlines()[-1].startswith("app:x:1000:1000:")
    if (ws.root / "debs/tzdata.deb").exists():
        assert (rootfs / "usr/share/zoneinfo/Europe/Paris").is_file()

    env = podman_env(tmp_path / "podman")
    load = subprocess.run(["podman", "load", "-i", str(ws.out("load.tar"))],
                          env=env, capture_output=True, text=True)
    assert load.returncode == 0, load.stderr
    run = subprocess.run(
        ["podman", "run", "--rm", "deb.local/base:latest", "sh", "-c",
         "id -u; cat /etc/hello.conf; ls /var/lib/dpkg/status.d"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.split()
    assert lines[:2] == ["1000", "greeting=hi"]
    assert {"busybox-static", "hello-conf"} <= set(lines[2:])


@pytest.mark.slow
def test_a_locked_deb_index_becomes_a_layer_per_architecture(tmp_path: Path) -> None:
    """The declaration side and this one together: `pyimg lock` pins the closure from a signed
    loopback archive, and deb_layer makes one layer per architecture of `@debian//ARCH:packages`."""
    require_tools()
    packages = [
        *(Deb("app", "1.0", a, depends="libfoo") for a in ("amd64", "arm64")),
        *(Deb("libfoo", "2.0", a, multi_arch="same") for a in ("amd64", "arm64")),
        Deb("base-files", "12.4", "all"),
    ]
    arc = Archive(tmp_path / "www" / "debian", SigningKey(tmp_path / "gnupg"), packages=packages)
    arc.publish()
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    (ws.root / "archive.gpg").write_bytes(arc.key.keyring())
    with serve(tmp_path / "www") as server:
        ws.write("MODULE.pyimg", f"""
            deb_index(
                name = "debian",
                sources = ["{server.url}/debian bookworm main"],
                keyring = "archive.gpg",
                architectures = ["amd64", "arm64"],
                packages = ["app", "base-files"],
            )
            """)
        ws.write("BUILD.pyimg", """
            load("@pyimg//rules:defs.bzl", "deb_layer")
            deb_layer(name = "amd64", debs = ["@debian//amd64:packages"])
            deb_layer(name = "arm64", debs = ["@debian//arm64:packages"])
            """)
        r = ws.run("lock", "--disk-cache", str(ws.cache))
        assert r.code == 0, r.err
        r = ws.run("build", "//:amd64", "//:arm64")
        assert r.code == 0, r.err
    for arch in ("amd64", "arm64"):
        with tarfile.open(ws.out(f"{arch}.tar")) as tar:
            names = tar.getnames()
            record = tar.extractfile("var/lib/dpkg/status.d/app")
            assert record is not None
            assert f"Architecture: {arch}" in record.read().decode()
        assert {n.rpartition("/")[2] for n in names if n.startswith("var/lib/dpkg/status.d/")} == {
            "app", "libfoo", "base-files"}
        assert "usr/share/doc/libfoo/copyright" in names
