"""Host tools are keyed by their identity (docs/concepts.md, "Tools are inputs"): a change to a
file of a tool's `data` re-runs the actions that use it, and `pyimg explain` names the file."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from workspace_helpers import REPO


def _summary(err: str) -> str:
    return next(line for line in err.splitlines() if line.startswith("Build completed")).split(",")[:2]


def _toolchain(tmp_path):
    """A tool (a shell script) that prints a file of its own library directory: the stand-in for
    an interpreter and its standard library, kept outside every directory the sandbox shows."""
    root = tmp_path / "toolchain"
    (root / "bin").mkdir(parents=True)
    (root / "lib" / "sub").mkdir(parents=True)
    (root / "lib" / "greeting.txt").write_text("hello\n")
    (root / "lib" / "sub" / "other.txt").write_text("other\n")
    tool = root / "bin" / "greet"
    tool.write_text(f"#!/bin/sh\ncat {root}/lib/greeting.txt\n")
    tool.chmod(0o755)
    return root


def _setup(ws, root, extra=""):
    ws.write("p/BUILD.pyimg", f"""
        host_tool(
            name = "greet",
            path = "{root}/bin/greet",
            data = ["{root}/lib"],{extra}
        )
        genrule(name = "g", outs = ["g.out"], tools = [":greet"], cmd = "greet > $@")
    """)


def test_a_change_in_a_tools_data_reruns_its_actions_and_explain_names_the_file(ws, tmp_path):
    root = _toolchain(tmp_path)
    _setup(ws, root)
    r = ws.run("build", "//p:g")
    assert r.code == 0, r.err
    assert ws.out("p/g.out").read_text() == "hello\n"  # the sandbox shows the tool's data
    r = ws.run("build", "//p:g")
    assert r.code == 0 and _summary(r.err) == ["Build completed: 0 actions run", " 1 cache hits"]

    (root / "lib" / "greeting.txt").write_text("bonjour\n")
    r = ws.run("build", "//p:g")
    assert r.code == 0, r.err
    assert _summary(r.err) == ["Build completed: 1 actions run", " 0 cache hits"]
    assert ws.out("p/g.out").read_text() == "bonjour\n"
    out = ws.run("explain", "//p:g").out
    assert f"host tool {root}/bin/greet: {root}/lib/greeting.txt changed" in out, out


def test_a_file_added_to_a_tools_data_reruns_its_actions(ws, tmp_path):
    root = _toolchain(tmp_path)
    _setup(ws, root)
    assert ws.run("build", "//p:g").code == 0
    (root / "lib" / "sub" / "new.txt").write_text("new\n")
    r = ws.run("build", "//p:g")
    assert r.code == 0 and _summary(r.err) == ["Build completed: 1 actions run", " 0 cache hits"]
    out = ws.run("explain", "//p:g").out
    assert f"host tool {root}/bin/greet: {root}/lib/sub/new.txt added" in out, out


def test_a_touched_data_file_runs_nothing(ws, tmp_path):
    root = _toolchain(tmp_path)
    _setup(ws, root)
    assert ws.run("build", "//p:g").code == 0
    greeting = root / "lib" / "greeting.txt"
    st = greeting.stat()
    os.utime(greeting, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    r = ws.run("build", "//p:g")
    assert r.code == 0 and _summary(r.err) == ["Build completed: 0 actions run", " 1 cache hits"]


def test_identity_bytes_still_keys_the_data(ws, tmp_path):
    root = _toolchain(tmp_path)
    _setup(ws, root, extra='\n            identity = "bytes",')
    assert ws.run("build", "//p:g").code == 0
    (root / "lib" / "greeting.txt").write_text("hi\n")
    r = ws.run("build", "//p:g")
    assert r.code == 0 and _summary(r.err) == ["Build completed: 1 actions run", " 0 cache hits"]


def test_missing_data_points_at_the_attribute(ws, tmp_path):
    root = _toolchain(tmp_path)
    _setup(ws, root)
    shutil.rmtree(root / "lib")
    r = ws.run("build", "//p:g")
    assert r.code == 2
    assert r.err.startswith("ERROR: p/BUILD.pyimg:5:"), r.err
    assert f"attribute 'data': '{root}/lib' does not exist on this machine" in r.err


def test_data_the_sandbox_makes_its_own_is_refused(ws):
    ws.write("p/BUILD.pyimg", """
        host_tool(name = "t", path = "/bin/sh", data = ["/proc/self"])
        genrule(name = "g", outs = ["g.out"], tools = [":t"], cmd = "true > $@")
    """)
    r = ws.run("build", "//p:g")
    assert r.code == 2
    assert "attribute 'data': \"/proc/self\" cannot be a tool's data" in r.err, r.err


def _python_deb(tmp_path, deb):
    """A .deb holding this host's Python 3.11 as Debian's python3.11-minimal and
    libpython3.11-stdlib lay it out: the program, its ld.so and libraries (as files, not
    links), and the standard library. (Tests do not download: the recipe is the same.)"""
    from pyimg.core.elf import library_closure

    pkg = tmp_path / "pkg"
    interpreter, libraries = library_closure("/usr/bin/python3.11")
    files = ["/usr/bin/python3.11", "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
             *(os.path.realpath(p) for p in libraries.values() if p)]
    for f in files:
        (pkg / f.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, pkg / f.lstrip("/"))
    shutil.copytree("/usr/lib/python3.11", pkg / "usr/lib/python3.11", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__", "test", "dist-packages"))
    (pkg / "DEBIAN").mkdir()
    (pkg / "DEBIAN/control").write_text("Package: python3.11-minimal\nVersion: 3.11\n"
                                        "Architecture: amd64\nMaintainer: t <t@t>\nDescription: t\n")
    subprocess.run(["dpkg-deb", "-Zgzip", "-z1", "--root-owner-group", "--build", str(pkg), str(deb)],
                   check=True, capture_output=True)


@pytest.mark.slow
@pytest.mark.skipif(not (os.path.exists("/usr/bin/python3.11") and shutil.which("dpkg-deb")
                         and os.path.exists("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")),
                    reason="needs Debian's python3.11 on x86_64 and dpkg-deb")
def test_the_documented_python_from_debian_packages_runs_without_the_hosts(ws, tmp_path):
    """docs/concepts.md's recipe, as written but for the label of the .deb files."""
    doc = (REPO / "docs/concepts.md").read_text()
    section = doc[doc.index("## Tools are inputs"):doc.index("## The sandbox")]
    build = re.search(r'```python\n(load\("@pyimg//rules:defs.bzl", "deb_layer"\).*?)```', section, re.S)
    assert build is not None
    ws.write("tools/BUILD.pyimg", build.group(1).replace('"@debian//amd64:packages"', '"python.deb"'))
    _python_deb(tmp_path, ws.root / "tools" / "python.deb")
    r = ws.run("build", "//tools:hello")
    assert r.code == 0, r.err
    assert ws.out("tools/hello.txt").read_text() == "[3, 11]\n"


def test_one_tool_declared_twice_with_different_data_is_refused(ws, tmp_path):
    root = _toolchain(tmp_path)
    ws.write("p/BUILD.pyimg", f"""
        host_tool(name = "a", path = "{root}/bin/greet", data = ["{root}/lib"])
        host_tool(name = "b", path = "{root}/bin/greet", data = ["{root}/lib/sub"])
        genrule(name = "g", outs = ["g.out"], tools = [":a", ":b"], cmd = "greet > $@")
    """)
    r = ws.run("build", "//p:g")
    assert r.code == 2
    assert r.err.startswith("ERROR: p/BUILD.pyimg:4:"), r.err
    assert f"host tool '{root}/bin/greet' is declared twice with different data" in r.err
