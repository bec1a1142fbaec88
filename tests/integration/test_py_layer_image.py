"""A py_layer in a real image: on a base layer made from the host's Debian CPython (no registry
needed), unpacked by umoci and run by podman, the installed package imports and its console
script runs with the image's interpreter."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest
from realtools import podman_env, require, umoci_unpack
from workspace_helpers import Workspace

sys.path.insert(0, str(Path(__file__).parents[1]))
from python_fixtures import Wheel, make_wheel, publish_index, serve_index, sha256_file  # noqa: E402

pytestmark = pytest.mark.slow
HOST_PYTHON = Path("/usr/bin/python3.11")
# What the interpreter and a console-script wrapper import: the top-level modules and these
# packages (a small base keeps the test fast).
_PACKAGES = {"encodings", "re", "collections", "importlib"}


def _libraries(binary: Path) -> list[Path]:
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if path.startswith("/"):
            libs.append(Path(path))
    return libs


def _host_python_base(out: Path) -> None:
    """A base layer tar: Debian's python3.11, the libraries it links and the part of its standard
    library that starting it and a console script need, with /usr/bin/python3 pointing at it."""
    def add(t: tarfile.TarFile, path: Path) -> None:
        t.add(path.resolve(), arcname=str(path).lstrip("/"), recursive=False)

    with tarfile.open(out, "w") as t:
        add(t, HOST_PYTHON)
        link = tarfile.TarInfo("usr/bin/python3")
        link.type, link.linkname = tarfile.SYMTYPE, "python3.11"
        t.addfile(link)
        for lib in _libraries(HOST_PYTHON):
            add(t, lib)
        stdlib = Path("/usr/lib/python3.11")
        for path in sorted(stdlib.rglob("*")):
            rel = path.relative_to(stdlib).parts
            if path.is_dir() or "__pycache__" in rel or (len(rel) > 1 and rel[0] not in _PACKAGES):
                continue
            add(t, path)


def test_podman_runs_the_installed_package(tmp_path: Path) -> None:
    require("umoci", "podman", "runc", "ldd")
    if not HOST_PYTHON.exists() or sys.version_info[:2] != (3, 11):
        pytest.skip("needs Debian's /usr/bin/python3.11")
    wheels = [
        make_wheel(tmp_path / "dist", Wheel(
            "mypkg", console_scripts={"mypkg-hello": "mypkg:main"}, requires=("helper",),
            files={"mypkg/__init__.py": b"import helper\n\ndef main():\n"
                   b"    print('hello from', helper.NAME)\n"})),
        make_wheel(tmp_path / "dist", Wheel("helper")),
    ]
    publish_index(tmp_path / "www", wheels)
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    _host_python_base(ws.root / "base.tar")
    ws.write("requirements.txt", "".join(
        f"{w.name.split('-')[0]}==1.0 --hash=sha256:{sha256_file(w)}\n" for w in wheels))
    ws.write("BUILD.pyimg", """
        load("@pyimg//rules:defs.bzl", "py_layer")

        py_layer(
            name = "site",
            deps = ["@pypi//mypkg"],
            platform = "linux/amd64",
            prefix = "/usr",
            site_packages = "/usr/lib/python3/dist-packages",
            python = "/usr/bin/python3",
            bytecode = True,
        )
        oci_image(name = "image", tars = ["base.tar", ":site"], entrypoint = ["/usr/bin/mypkg-hello"])
        oci_load(name = "load", image = ":image", repo_tags = ["py.local/app:latest"])
        """)
    with serve_index(tmp_path / "www") as server:
        ws.write("MODULE.pyimg", f"""
            pip_lock(name = "pypi", requirements = "requirements.txt", python_version = "3.11",
                     index_url = "{server.url}/simple")
            """)
        r = ws.run("lock", "--disk-cache", str(ws.cache))
        assert r.code == 0, r.err
        r = ws.run("build", "//:image", "//:load")
        assert r.code == 0, r.err
    rootfs = umoci_unpack(ws.out("image"), tmp_path / "unpacked")
    installer = rootfs / "usr/lib/python3/dist-packages/mypkg-1.0.dist-info/INSTALLER"
    assert installer.read_text() == "pyimg\n"
    assert (rootfs / "usr/bin/mypkg-hello").read_text().startswith("#!/usr/bin/python3\n")

    # A short root: podman's sockets live under it, and a long pytest path makes each
    # `podman run` wait about 20 s here.
    podman_root = Path(tempfile.mkdtemp(prefix="pyl-", dir="/tmp"))
    env = podman_env(podman_root)
    try:
        load = subprocess.run(["podman", "load", "-i", str(ws.out("load.tar"))],
                              env=env, capture_output=True, text=True)
        assert load.returncode == 0, load.stderr
        _run_image(env)
    finally:
        shutil.rmtree(podman_root, ignore_errors=True)


def _run_image(env: dict[str, str]) -> None:
    run = subprocess.run(["podman", "run", "--rm", "py.local/app:latest"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "hello from helper\n"
    run = subprocess.run(
        ["podman", "run", "--rm", "--entrypoint", "/usr/bin/python3", "py.local/app:latest",
         "-c", "import mypkg, sys; print(mypkg.__file__, sys.flags.dont_write_bytecode)"],
        env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("/usr/lib/python3/dist-packages/mypkg/__init__.py")
