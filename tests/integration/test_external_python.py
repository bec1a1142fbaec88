"""pip_lock and py_layer through the CLI against a PEP 691 / PEP 503 index on loopback: lock
(markers, extras, platform tags, abi3), fetch, --offline, the lock's format, the layer's files, and
every refusal (missing hash, hash mismatch, no wheel, unpinned dependency, stale lock)."""

from __future__ import annotations

import json
import os
import sys
import tarfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from workspace_helpers import Workspace

sys.path.insert(0, str(Path(__file__).parents[1]))
from python_fixtures import (  # noqa: E402
    IndexServer,
    Wheel,
    make_sdist,
    make_wheel,
    publish_index,
    serve_index,
    sha256_file,
)

SITE = "usr/local/lib/python3.11/site-packages"


def _wheels(out: Path) -> list[Path]:
    return [
        make_wheel(out, Wheel(
            "mypkg", "1.0", console_scripts={"mypkg-hello": "mypkg:main"},
            files={"mypkg/__init__.py": b"def main():\n    print('hello from mypkg')\n"},
            extras=("fast",),
            requires=("helper>=1", "extra-dep; extra == 'fast'", "winonly; sys_platform == 'win32'",
                      "armonly; platform_machine == 'aarch64'"))),
        make_wheel(out, Wheel(
            "helper", "1.0", executable=("helper-1.0.data/scripts/helper-tool",), files={
                "helper/__init__.py": b"",
                "helper-1.0.data/scripts/helper-tool": b"#!python\nprint('tool')\n",
                "helper-1.0.data/data/share/helper/x.txt": b"data\n",
                "helper-1.0.data/headers/helper.h": b"/* h */\n",
            })),
        make_wheel(out, Wheel("extra-dep", "1.0")),
        make_wheel(out, Wheel("armonly", "1.0")),
        make_wheel(out, Wheel("winonly", "1.0")),
        # amd64: the CPython-specific wheel beats py3-none-any; one too new for glibc 2.28 is
        # never chosen. arm64: abi3 beats py3-none-any.
        make_wheel(out, Wheel("native", "2.0", "cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64",
                              files={"native/_n.so": b"\x7fELF fake amd64"})),
        make_wheel(out, Wheel("native", "2.0", "cp311-cp311-manylinux_2_34_x86_64",
                              files={"native/_n.so": b"\x7fELF too new"})),
        make_wheel(out, Wheel("native", "2.0", "cp38-abi3-manylinux_2_17_aarch64",
                              files={"native/_n.so": b"\x7fELF fake arm64"})),
        make_wheel(out, Wheel("native", "2.0", "py3-none-any",
                              files={"native/__init__.py": b"# pure fallback\n"})),
        make_sdist(out, "sdistonly", "1.0"),
    ]


@pytest.fixture
def index(tmp_path: Path) -> Iterator[tuple[IndexServer, dict[str, Path]]]:
    files = _wheels(tmp_path / "dist")
    publish_index(tmp_path / "www", files)
    with serve_index(tmp_path / "www") as server:
        yield server, {f.name: f for f in files}


def _hashes(files: dict[str, Path], project: str) -> str:
    return " ".join(f"\\\n    --hash=sha256:{sha256_file(p)}" for n, p in sorted(files.items())
                    if n.split("-")[0] == project.replace("-", "_"))


def _requirements(files: dict[str, Path], without: str = "") -> str:
    text = f"""\
# pip-compile --generate-hashes
armonly==1.0 ; platform_machine == "aarch64" {_hashes(files, "armonly")}
    # via mypkg
extra-dep==1.0 {_hashes(files, "extra-dep")}
helper==1.0 {_hashes(files, "helper")}
mypkg[fast]==1.0 {_hashes(files, "mypkg")}
native==2.0 {_hashes(files, "native")}
"""
    if without:  # the logical line of `without`, with its continuation lines
        lines = text.split("\n")
        start = next(i for i, t in enumerate(lines) if t.startswith(without + "=="))
        end = start
        while lines[end].endswith("\\"):
            end += 1
        text = "\n".join(lines[:start] + lines[end + 1:])
    return text


def _workspace(tmp_path: Path, server: IndexServer, files: dict[str, Path], name: str = "ws",
               requirements: str | None = None, extra: str = "") -> Workspace:
    ws = Workspace(tmp_path / name, tmp_path / f"{name}-cache")
    ws.write("requirements.txt", requirements if requirements is not None else _requirements(files))
    ws.write("MODULE.pyimg", f"""
        pip_lock(
            name = "pypi",
            requirements = "requirements.txt",
            python_version = "3.11",
            platforms = ["linux/amd64", "linux/arm64"],
            index_url = "{server.url}/simple",{extra}
        )
        """)
    ws.write("app/BUILD.pyimg", """
        load("@pyimg//rules:defs.bzl", "py_layer")

        py_layer(name = "mypkg", deps = ["@pypi//mypkg"], platform = "linux/amd64")
        py_layer(name = "all_arm", deps = ["@pypi//:all"], platform = "linux/arm64",
                 prefix = "/usr", site_packages = "/usr/lib/python3/dist-packages",
                 python = "/usr/bin/python3")
        """)
    return ws


def _lock(ws: Workspace, *args: str):  # noqa: ANN202
    return ws.run("lock", "--disk-cache", str(ws.cache), *args)


def _members(path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(path) as t:
        return {m.name: m for m in t.getmembers()}


def _read(path: Path, name: str) -> bytes:
    with tarfile.open(path) as t:
        f = t.extractfile(name)
        assert f is not None
        return f.read()


def test_lock_fetch_offline_and_layer(index, tmp_path: Path) -> None:  # noqa: ANN001
    server, files = index
    ws = _workspace(tmp_path, server, files)
    r = _lock(ws)
    assert r.code == 0, r.err
    text = (ws.root / "pyimg.lock").read_text()
    entry = json.loads(text)["repositories"]["pypi"]
    amd, arm = entry["wheels"]["linux/amd64"], entry["wheels"]["linux/arm64"]
    # Markers: armonly only on arm64, winonly nowhere; the extra [fast] brings extra-dep.
    assert sorted(amd) == ["extra-dep", "helper", "mypkg", "native"]
    assert sorted(arm) == ["armonly", "extra-dep", "helper", "mypkg", "native"]
    assert amd["mypkg"]["deps"] == ["extra-dep", "helper"]
    assert arm["mypkg"]["deps"] == ["armonly", "extra-dep", "helper"]
    # Tags as pip orders them: cp311 over py3-none-any, abi3 on arm64, never a too-new glibc.
    assert amd["native"]["file"] == (
        "native-2.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl")
    assert arm["native"]["file"] == "native-2.0-cp38-abi3-manylinux_2_17_aarch64.whl"
    assert amd["helper"]["sha256"] == sha256_file(files["helper-1.0-py3-none-any.whl"])
    assert amd["helper"]["url"] == f"{server.url}/files/helper-1.0-py3-none-any.whl"
    # One wheel per line, sorted: two branches adding packages merge.
    rows = [line.strip() for line in text.splitlines() if '"sha256"' in line]
    assert len(rows) == 9 and rows[:4] == sorted(rows[:4])
    # Stable: a second lock writes the same bytes and reads no index.
    before = len(server.requests)
    assert _lock(ws).code == 0 and (ws.root / "pyimg.lock").read_text() == text
    assert len(server.requests) == before

    r = ws.run("fetch", "--disk-cache", str(ws.cache))
    assert r.code == 0, r.err
    server.close()  # offline from here: only the repository cache
    r = ws.run("build", "--offline", "//app:mypkg", "//app:all_arm")
    assert r.code == 0, r.err
    layer = ws.out("app/mypkg.tar")
    names = _members(layer)
    info = f"{SITE}/mypkg-1.0.dist-info"
    assert _read(layer, f"{info}/INSTALLER") == b"pyimg\n"
    record = _read(layer, f"{info}/RECORD").decode()
    assert "mypkg/__init__.py,sha256=" in record and "../../../bin/mypkg-hello,sha256=" in record
    script = _read(layer, "usr/local/bin/mypkg-hello").decode()
    assert script.startswith("#!/usr/local/bin/python3\n") and "from mypkg import main" in script
    assert names["usr/local/bin/mypkg-hello"].mode == 0o755
    # .data: scripts with the shebang rewritten, data under the prefix, headers per project.
    assert _read(layer, "usr/local/bin/helper-tool").startswith(b"#!/usr/local/bin/python3\n")
    assert names["usr/local/bin/helper-tool"].mode == 0o755
    assert _read(layer, "usr/local/share/helper/x.txt") == b"data\n"
    assert _read(layer, "usr/local/include/python3.11/helper/helper.h") == b"/* h */\n"
    assert f"{SITE}/extra_dep/__init__.py" in names
    assert not any("native" in n or "armonly" in n for n in names)  # not in mypkg's set
    assert {m.mtime for m in names.values()} == {0} and {m.uid for m in names.values()} == {0}
    arm = _members(ws.out("app/all_arm.tar"))
    assert _read(ws.out("app/all_arm.tar"),
                 "usr/lib/python3/dist-packages/native/_n.so") == b"\x7fELF fake arm64"
    assert "usr/lib/python3/dist-packages/armonly/__init__.py" in arm
    assert _read(ws.out("app/all_arm.tar"), "usr/bin/mypkg-hello").startswith(b"#!/usr/bin/python3\n")


def test_html_index_locks_the_same(index, tmp_path: Path) -> None:  # noqa: ANN001
    server, files = index
    ws = _workspace(tmp_path, server, files)
    assert _lock(ws).code == 0
    with serve_index(tmp_path / "www", html_only=True) as html:
        ws2 = _workspace(tmp_path, html, files, name="ws2")
        r = _lock(ws2)
        assert r.code == 0, r.err
    a = json.loads((ws.root / "pyimg.lock").read_text())["repositories"]["pypi"]["wheels"]
    b = json.loads((ws2.root / "pyimg.lock").read_text())["repositories"]["pypi"]["wheels"]
    strip = lambda w: {p: {n: {k: v for k, v in d.items() if k != "url"}  # noqa: E731
                           for n, d in pkgs.items()} for p, pkgs in w.items()}
    assert strip(a) == strip(b)


def test_netrc_credentials(index, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    _, files = index
    with serve_index(tmp_path / "www", auth="alice:s3cret") as private:
        ws = _workspace(tmp_path, private, files)
        r = _lock(ws)
        assert r.code != 0 and "HTTP 401" in r.err
        netrc = tmp_path / "netrc"
        netrc.write_text("machine 127.0.0.1 login alice password s3cret\n")
        netrc.chmod(0o600)
        monkeypatch.setenv("NETRC", str(netrc))
        r = _lock(ws)
        assert r.code == 0, r.err
        assert "s3cret" not in (ws.root / "pyimg.lock").read_text()


def _fake_keyring(bin_dir: Path, calls: Path, service: str, user: str, secret: str) -> None:
    """A `keyring` program on PATH that knows one password, as `keyring get SERVICE USER`."""
    bin_dir.mkdir()
    program = bin_dir / "keyring"
    program.write_text(f"""#!/bin/sh
echo "$@" >> {calls}
if [ "$1" = get ] && [ "$2" = "{service}" ] && [ "$3" = "{user}" ]; then
  echo "{secret}"; exit 0
fi
exit 1
""")
    program.chmod(0o755)


def test_keyring_credentials(index, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """pip's `--keyring-provider subprocess`: the user name in the index URL, the password from
    `keyring get HOST USER` (after the index URL itself was asked), for the pages at lock time and
    the wheels at fetch time; the password is in neither the lock nor an error."""
    _, files = index
    monkeypatch.delenv("NETRC", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc of the machine's
    with serve_index(tmp_path / "www", auth="alice:k3yr1ng") as private:
        host = private.url.removeprefix("http://")

        class WithUser:
            url = f"http://alice@{host}"

        ws = _workspace(tmp_path, WithUser, files)  # type: ignore[arg-type]
        r = _lock(ws)
        assert r.code != 0 and "HTTP 401" in r.err and "k3yr1ng" not in r.err
        calls = tmp_path / "keyring-calls"
        _fake_keyring(tmp_path / "bin", calls, host, "alice", "k3yr1ng")
        monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
        r = _lock(ws)
        assert r.code == 0, r.err
        asked = calls.read_text().splitlines()
        assert asked == [f"get http://{host}/simple alice", f"get {host} alice"]
        lock = (ws.root / "pyimg.lock").read_text()
        assert "k3yr1ng" not in lock and "alice@" not in lock
        # A cold repository cache downloads the wheels with the same credentials.
        cold = Workspace(ws.root, tmp_path / "cold-cache")
        r = cold.run("build", "//app:mypkg")
        assert r.code == 0, r.err
        assert any(p.startswith("/files/mypkg-") for p in private.requests)
        assert not any("k3yr1ng" in p.read_text(errors="replace")
                       for p in (tmp_path / "cold-cache").rglob("*") if p.is_file()
                       and p.stat().st_size < 1 << 20)


def test_refusals(index, tmp_path: Path) -> None:  # noqa: ANN001
    server, files = index
    good = _requirements(files)
    # A requirement without a hash: refused at its line.
    ws = _workspace(tmp_path, server, files, "nohash", good + "extra-thing==1.0\n")
    r = _lock(ws)
    line = len(good.splitlines()) + 1
    assert r.code == 2 and f"requirements.txt:{line}:1: extra-thing==1.0 has no --hash" in r.err
    helper_line = 1 + next(i for i, t in enumerate(good.splitlines()) if t.startswith("helper=="))
    # A hash that is not the index's: refused naming the wheel and both sides.
    bad = good.replace(sha256_file(files["helper-1.0-py3-none-any.whl"]), "0" * 64)
    ws = _workspace(tmp_path, server, files, "mismatch", bad)
    r = _lock(ws)
    assert r.code != 0 and f"requirements.txt:{helper_line}:1:" in r.err
    assert "helper-1.0-py3-none-any.whl has sha256" in r.err and "0" * 64 in r.err
    # Only an sdist: the error names the requirement and the tags tried.
    sdist = sha256_file(files["sdistonly-1.0.tar.gz"])
    ws = _workspace(tmp_path, server, files, "sdist",
                    good + f"sdistonly==1.0 --hash=sha256:{sdist}\n")
    r = _lock(ws)
    assert r.code == 2, r.err
    assert f"requirements.txt:{line}:1: pip_lock 'pypi': no wheel of sdistonly==1.0 for linux/amd64" in r.err
    assert "cp311-cp311-manylinux_2_28_x86_64" in r.err and "py3-none-any" in r.err
    assert "does not build sdists" in r.err
    # A dependency the file does not pin: refused naming both.
    ws = _workspace(tmp_path, server, files, "unpinned",
                    _requirements(files, without="helper"))
    r = _lock(ws)
    assert r.code == 2 and "mypkg 1.0 requires 'helper>=1'" in r.err, r.err
    # Stale: requirements.txt changed after the lock and a build; the next build asks for
    # `pyimg lock` (it must not replay the build made with the old file).
    ws = _workspace(tmp_path, server, files, "stale")
    assert _lock(ws).code == 0
    assert ws.run("build", "//app:mypkg").code == 0
    ws.write("requirements.txt", good + "# edited\n")
    r = ws.run("build", "//app:mypkg")
    assert r.code == 2 and "run `pyimg lock`" in r.err, r.err
    # Offline lock: refused.
    r = _lock(ws, "--offline")
    assert r.code != 0 and "needs the network" in r.err


def test_lock_out_of_date_with_pyproject(index, tmp_path: Path) -> None:  # noqa: ANN001
    """The pyproject.toml beside requirements.txt: each of [project].dependencies that applies
    on a declared platform must be pinned at an allowed version, at `pyimg lock` and, after an
    edit, at the next build; the error is at the dependency's line and names the pin."""
    server, files = index
    ws = _workspace(tmp_path, server, files)
    pyproject = textwrap.dedent("""\
        [project]
        name = "svc"
        version = "0"
        dependencies = [
            "mypkg[fast]>=1.0",
            "native==2.*",
            "winonly; sys_platform == 'win32'",
        ]
        """)
    ws.write("pyproject.toml", pyproject)
    assert _lock(ws).code == 0
    assert ws.run("build", "//app:mypkg").code == 0
    # A new dependency the requirements file does not pin: refused at the next build.
    ws.write("pyproject.toml", pyproject.replace('"native==2.*",', '"native==2.*",\n    "flask>=3",'))
    r = ws.run("build", "//app:mypkg")
    assert r.code == 2, r.err
    assert ("pyproject.toml:7:5: pip_lock 'pypi': requirements.txt is out of date with "
            "pyproject.toml: it does not pin 'flask>=3'") in r.err
    # A specifier the pin no longer meets: refused naming both lines.
    ws.write("pyproject.toml", pyproject.replace("native==2.*", "native>=3"))
    r = _lock(ws)
    native_line = 1 + next(i for i, t in enumerate(_requirements(files).splitlines())
                           if t.startswith("native=="))
    assert r.code == 2, r.err
    assert (f"pyproject.toml:6:5: pip_lock 'pypi': requirements.txt is out of date with "
            f"pyproject.toml: it pins native==2.0 (at requirements.txt:{native_line}:1), which "
            "'native>=3' does not allow") in r.err
    # Dependencies pyimg cannot read are not checked; `pyproject = ""` checks none.
    ws.write("pyproject.toml", pyproject.replace('version = "0"', 'version = "0"\ndynamic = ["dependencies"]')
             .replace("native==2.*", "native>=3"))
    assert _lock(ws).code == 0
    ws.write("pyproject.toml", pyproject.replace("native==2.*", "native>=3"))
    ws.write("MODULE.pyimg", (ws.root / "MODULE.pyimg").read_text().replace(
        'python_version = "3.11",', 'python_version = "3.11", pyproject = "",'))
    assert _lock(ws).code == 0


def test_layer_is_reproducible(index, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    server, files = index
    digests = []
    for name, umask, tz in (("one", 0o022, "UTC"), ("other/deeper", 0o077, "Asia/Tokyo")):
        monkeypatch.setenv("TZ", tz)
        time.tzset()
        old = os.umask(umask)
        try:
            ws = _workspace(tmp_path, server, files, name)
            ws.write("app/BUILD.pyimg", """
                load("@pyimg//rules:defs.bzl", "py_layer")

                py_layer(name = "mypkg", deps = ["@pypi//mypkg", "@pypi//native"],
                         platform = "linux/amd64", bytecode = True)
                oci_image(name = "image", tars = [":mypkg"])
                """)
            assert _lock(ws).code == 0
            r = ws.run("build", "//app:image", "//app:mypkg")
            assert r.code == 0, r.err
            digests.append((ws.out("app/image.digest").read_text(),
                            sha256_file(ws.out("app/mypkg.tar"))))
            names = _members(ws.out("app/mypkg.tar"))
            assert f"{SITE}/mypkg/__pycache__/__init__.cpython-311.pyc" in names
        finally:
            os.umask(old)
    monkeypatch.delenv("TZ")
    time.tzset()
    assert digests[0] == digests[1]


def test_pylock_toml(index, tmp_path: Path) -> None:  # noqa: ANN001
    server, files = index

    def package(name: str, version: str, marker: str = "") -> str:
        wheels = ",\n".join(
            f'  {{ name = "{n}", url = "{server.url}/files/{n}", '
            f'hashes = {{ sha256 = "{sha256_file(p)}" }} }}'
            for n, p in sorted(files.items())
            if n.startswith(name.replace("-", "_") + "-") and n.endswith(".whl"))
        return (f'[[packages]]\nname = "{name}"\nversion = "{version}"\n'
                + (f"marker = {json.dumps(marker)}\n" if marker else "")
                + f"wheels = [\n{wheels}\n]\n")

    ws = Workspace(tmp_path / "ws", tmp_path / "ws-cache")
    ws.write("pylock.toml", 'lock-version = "1.0"\ncreated-by = "test"\n\n' + "\n".join([
        package("armonly", "1.0", "platform_machine == 'aarch64'"), package("helper", "1.0"),
        package("mypkg", "1.0"), package("native", "2.0")]))
    ws.write("MODULE.pyimg", """
        pip_lock(name = "pypi", lock = "pylock.toml", python_version = "3.11",
                 platforms = ["linux/amd64", "linux/arm64"])
        """)
    r = _lock(ws)
    assert r.code == 0, r.err
    assert not any(p.startswith("/simple") for p in server.requests)  # no index read
    wheels = json.loads((ws.root / "pyimg.lock").read_text())["repositories"]["pypi"]["wheels"]
    assert sorted(wheels["linux/amd64"]) == ["helper", "mypkg", "native"]
    assert wheels["linux/arm64"]["mypkg"]["deps"] == ["armonly", "helper"]
    assert wheels["linux/arm64"]["native"]["file"] == "native-2.0-cp38-abi3-manylinux_2_17_aarch64.whl"
    ws.write("app/BUILD.pyimg", """
        load("@pyimg//rules:defs.bzl", "py_layer")

        py_layer(name = "layer", deps = ["@pypi//mypkg"], platform = "linux/arm64")
        """)
    r = ws.run("build", "//app:layer")
    assert r.code == 0, r.err
    assert f"{SITE}/armonly/__init__.py" in _members(ws.out("app/layer.tar"))


def _extract_and_import(tar: Path, dest: Path, site: str, code: str) -> str:
    """Unpack the layer and run the host's CPython on it (isolated: only the layer's
    site-packages on the path), which proves the installed files import as they are."""
    import subprocess

    with tarfile.open(tar) as t:
        t.extractall(dest, filter="data")
    proc = subprocess.run([sys.executable, "-I", "-S", "-c",
                           f"import sys; sys.path.insert(0, {str(dest / site)!r}); {code}"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="imports cp311 wheels")
def test_installed_layer_imports_and_runs(index, tmp_path: Path) -> None:  # noqa: ANN001
    import subprocess

    server, files = index
    ws = _workspace(tmp_path, server, files)
    assert _lock(ws).code == 0
    r = ws.run("build", "//app:mypkg")
    assert r.code == 0, r.err
    root = tmp_path / "root"
    out = _extract_and_import(ws.out("app/mypkg.tar"), root, SITE,
                              "import mypkg, helper, extra_dep; mypkg.main()")
    assert out == "hello from mypkg\n"
    # The console script: its shebang names the image's interpreter; run it with ours.
    script = root / "usr/local/bin/mypkg-hello"
    proc = subprocess.run([sys.executable, "-I", str(script)], capture_output=True, text=True,
                          env={"PYTHONPATH": str(root / SITE)})
    # -I ignores PYTHONPATH: the script must fail to find mypkg, proving it imports, not prints.
    assert proc.returncode != 0 and "mypkg" in proc.stderr
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env={"PYTHONPATH": str(root / SITE)})
    assert proc.stdout == "hello from mypkg\n", proc.stderr


def _pypi_reachable() -> bool:
    import socket

    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="imports cp311 wheels")
def test_real_pypi(tmp_path: Path) -> None:
    """The one test that reaches PyPI (skipped where it is unreachable): a real requirements.txt
    with a pure and a manylinux package, locked for two platforms, installed and imported."""
    if not _pypi_reachable():
        pytest.skip("pypi.org is unreachable")
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    ws.write("requirements.txt", """\
        markupsafe==2.1.5 \\
            --hash=sha256:6ec585f69cec0aa07d945b20805be741395e28ac1627333b1c5b0105962ffced \\
            --hash=sha256:b91c037585eba9095565a3556f611e3cbfaa42ca1e865f7b8015fe5c7336d5a5 \\
            --hash=sha256:d283d37a890ba4c1ae73ffadf8046435c76e7bc2247bbb63c00bd1a709c6544b
        six==1.16.0 \\
            --hash=sha256:1e61c37477a1626458e36f7b1d82aa5c9b094fa4802892072e49de9c60c4c926 \\
            --hash=sha256:8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254
        """)
    ws.write("MODULE.pyimg", """
        pip_lock(name = "pypi", requirements = "requirements.txt", python_version = "3.11",
                 platforms = ["linux/amd64", "linux/arm64"])
        """)
    ws.write("BUILD.pyimg", """
        load("@pyimg//rules:defs.bzl", "py_layer")

        py_layer(name = "layer", deps = ["@pypi//:all"], platform = "linux/amd64")
        """)
    r = _lock(ws)
    assert r.code == 0, r.err
    wheels = json.loads((ws.root / "pyimg.lock").read_text())["repositories"]["pypi"]["wheels"]
    assert wheels["linux/arm64"]["markupsafe"]["file"] == (
        "MarkupSafe-2.1.5-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl")
    assert wheels["linux/amd64"]["six"]["file"] == "six-1.16.0-py2.py3-none-any.whl"
    r = ws.run("build", "//:layer")
    assert r.code == 0, r.err
    import platform

    if platform.machine() == "x86_64":
        out = _extract_and_import(ws.out("layer.tar"), tmp_path / "root", SITE,
                                  "import markupsafe, six; print(markupsafe.escape('<'))")
        assert out == "&lt;\n"


def test_hashes_narrow_the_choice_as_pip(index, tmp_path: Path) -> None:  # noqa: ANN001
    """pip's rule: when some file has an allowed hash, only those are candidates, so a
    requirement listing only the pure wheel's hash gets the pure wheel on every platform."""
    server, files = index
    pure = sha256_file(files["native-2.0-py3-none-any.whl"])
    ws = _workspace(tmp_path, server, files,
                    requirements=f"native==2.0 --hash=sha256:{pure}\n")
    r = _lock(ws)
    assert r.code == 0, r.err
    wheels = json.loads((ws.root / "pyimg.lock").read_text())["repositories"]["pypi"]["wheels"]
    assert {p: w["native"]["file"] for p, w in wheels.items()} == {
        "linux/amd64": "native-2.0-py3-none-any.whl", "linux/arm64": "native-2.0-py3-none-any.whl"}


def _layer_files(layout: Path) -> dict[str, dict[str, bytes]]:
    """platform -> {path: content} of the files in an index layout's images' layers."""
    import gzip

    def blob(digest: str) -> bytes:
        return (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()

    index = json.loads((layout / "index.json").read_text())
    top = json.loads(blob(index["manifests"][0]["digest"]))
    found: dict[str, dict[str, bytes]] = {}
    for m in top["manifests"]:
        platform = f"{m['platform']['os']}/{m['platform']['architecture']}"
        files: dict[str, bytes] = {}
        for layer in json.loads(blob(m["digest"]))["layers"]:
            import io

            with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob(layer["digest"])))) as t:
                for member in t.getmembers():
                    if member.isfile():
                        f = t.extractfile(member)
                        assert f is not None
                        files[member.name] = f.read()
        found[platform] = files
    return found


def test_the_configuration_platform_chooses_the_wheels(index, tmp_path: Path) -> None:  # noqa: ANN001
    """Without `platform`, py_layer installs the wheels of the platform it is built for: each
    image of a multi-platform index gets its own architecture's native wheel."""
    server, files = index
    ws = _workspace(tmp_path, server, files)
    ws.write("app/BUILD.pyimg", """
        load("@pyimg//rules:defs.bzl", "py_layer")

        py_layer(name = "site", deps = ["@pypi//native"])
        oci_image(name = "image", tars = [":site"])
        oci_image_index(name = "index", images = [":image"],
                        platforms = ["linux/amd64", "linux/arm64/v8"])
        """)
    assert _lock(ws).code == 0
    r = ws.run("build", "//app:index")
    assert r.code == 0, r.err
    so = f"{SITE}/native/_n.so"
    layers = _layer_files(ws.out("app/index"))
    assert layers["linux/amd64"][so] == b"\x7fELF fake amd64"
    assert layers["linux/arm64"][so] == b"\x7fELF fake arm64"
    # `--platforms` alike; the attribute, when set, wins.
    r = ws.run("build", "--platforms", "linux/arm64", "//app:site")
    assert r.code == 0, r.err
    assert _read(ws.out("platforms/linux-arm64/app/site.tar"), so) == b"\x7fELF fake arm64"
