"""The py_layer builtin: wheels installed as pip would into a canonical tar; bytecode;
refusals (conflicts, paths outside the image root, broken wheels)."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from oci_workspace import Workspace
from pyimg.errors import UserInputError
from python_fixtures import Wheel, make_wheel

SITE = "/usr/local/lib/python3.11/site-packages"
RUNNING = f"{sys.version_info[0]}.{sys.version_info[1]}"


def _py_layer(ws: Workspace, wheels: list[Path], out: str = "pyimg-out/py.tar",
              **params: object) -> Path:
    exec_paths = [str(w.relative_to(ws.root)) for w in wheels]
    ws.run("py_layer", {"wheels": exec_paths, "site_packages": SITE, "prefix": "/usr/local",
                        "python": "/usr/local/bin/python3", "python_version": "3.11", **params},
           exec_paths, [out])
    return ws.path(out)


def _names(tar: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(tar) as tf:
        return {m.name: m for m in tf.getmembers()}


def _read(tar: Path, name: str) -> bytes:
    with tarfile.open(tar) as tf:
        f = tf.extractfile(name)
        assert f is not None
        return f.read()


def test_install_as_pip_would(ws: Workspace) -> None:
    wheel = make_wheel(ws.root / "w", Wheel(
        "demo", "2.0", console_scripts={"demo": "demo.cli:main"},
        files={"demo/__init__.py": b"", "demo/cli.py": b"def main():\n    return 0\n",
               "demo-2.0.data/purelib/demo_extra.py": b"X = 1\n",
               "demo-2.0.data/data/share/man/man1/demo.1": b".TH demo\n"}))
    tar = _py_layer(ws, [wheel])
    names = _names(tar)
    info = "usr/local/lib/python3.11/site-packages/demo-2.0.dist-info"
    assert _read(tar, f"{info}/INSTALLER") == b"pyimg\n"
    record = _read(tar, f"{info}/RECORD").decode().splitlines()
    # Every installed file is in RECORD with its hash; RECORD itself without one.
    assert "demo-2.0.dist-info/RECORD,," in record
    cli = _read(tar, "usr/local/lib/python3.11/site-packages/demo/cli.py")
    import base64

    digest = base64.urlsafe_b64encode(hashlib.sha256(cli).digest()).rstrip(b"=").decode()
    assert f"demo/cli.py,sha256={digest},{len(cli)}" in record
    assert "../../../bin/demo" in "\n".join(record)
    assert _read(tar, "usr/local/bin/demo").startswith(b"#!/usr/local/bin/python3\n")
    assert names["usr/local/bin/demo"].mode == 0o755
    assert "usr/local/lib/python3.11/site-packages/demo_extra.py" in names  # .data/purelib
    assert _read(tar, "usr/local/share/man/man1/demo.1") == b".TH demo\n"
    assert {(m.uid, m.gid, m.mtime) for m in names.values()} == {(0, 0, 0)}
    assert names["usr/local/lib/python3.11/site-packages/demo/cli.py"].mode == 0o644


@pytest.mark.skipif(RUNNING != "3.11", reason="the bytecode test pins Python 3.11")
def test_bytecode_is_checked_hash_and_reproducible(ws: Workspace) -> None:
    wheel = make_wheel(ws.root / "w", Wheel("demo", files={
        "demo/__init__.py": b"VALUE = 42\n", "demo/broken.py": b"def (:\n"}))
    one = _py_layer(ws, [wheel], "pyimg-out/a.tar", bytecode=True)
    two = _py_layer(ws, [wheel], "pyimg-out/b.tar", bytecode=True)
    assert one.read_bytes() == two.read_bytes()
    pyc_name = f"usr/local/lib/python3.11/site-packages/demo/__pycache__/__init__.{sys.implementation.cache_tag}.pyc"
    pyc = _read(one, pyc_name)
    assert pyc[:4] == importlib.util.MAGIC_NUMBER
    assert int.from_bytes(pyc[4:8], "little") == 0b11  # checked hash (PEP 552)
    assert pyc[8:16] == importlib.util.source_hash(b"VALUE = 42\n")
    import marshal

    namespace: dict[str, object] = {}
    exec(marshal.loads(pyc[16:]), namespace)
    assert namespace["VALUE"] == 42
    # A file that does not compile gets no .pyc, as with pip.
    assert not any("broken." in n and n.endswith(".pyc") for n in _names(one))


def test_bytecode_refused_for_another_python(ws: Workspace) -> None:
    wheel = make_wheel(ws.root / "w", Wheel("demo"))
    other = "3.9" if RUNNING != "3.9" else "3.10"
    with pytest.raises(UserInputError, match=f"needs pyimg to run on Python {other}"):
        _py_layer(ws, [wheel], bytecode=True, python_version=other)


def test_conflict_names_both_packages(ws: Workspace) -> None:
    a = make_wheel(ws.root / "w", Wheel("alpha", files={"shared/util.py": b"A\n"}))
    b = make_wheel(ws.root / "w", Wheel("beta", files={"shared/util.py": b"B\n"}))
    with pytest.raises(UserInputError) as e:
        _py_layer(ws, [a, b])
    assert "shared/util.py is installed by both alpha (alpha-1.0-py3-none-any.whl) and beta" in str(e.value)
    # The same bytes from two packages (a namespace package's __init__) are not a conflict.
    c = make_wheel(ws.root / "w2", Wheel("gamma", files={"shared/util.py": b"A\n"}))
    _py_layer(ws, [a, c])


def test_install_paths_outside_the_image_root(ws: Workspace) -> None:
    wheel = make_wheel(ws.root / "w", Wheel("demo"))
    for key, value in (("site_packages", "/usr/../../etc"), ("prefix", "relative/path"),
                       ("site_packages", "/usr/lib/../../../x")):
        with pytest.raises(UserInputError, match=key):
            _py_layer(ws, [wheel], **{key: value})
    # A wheel whose .data would climb out of its scheme directory.
    evil = make_wheel(ws.root / "evil", Wheel("evil", files={
        "evil/__init__.py": b"", "evil-1.0.data/data/../../../../../etc/passwd": b"root::0:0\n"}))
    with pytest.raises(UserInputError, match="evil-1.0-py3-none-any.whl: cannot install"):
        _py_layer(ws, [evil])


def test_broken_wheel(ws: Workspace) -> None:
    bad = ws.root / "w" / "bad-1.0-py3-none-any.whl"
    bad.parent.mkdir()
    bad.write_bytes(b"not a zip")
    with pytest.raises(UserInputError, match="bad-1.0-py3-none-any.whl"):
        _py_layer(ws, [bad])
    nowheel = ws.root / "w" / "nometa-1.0-py3-none-any.whl"
    with zipfile.ZipFile(nowheel, "w") as z:
        z.writestr("nometa/__init__.py", "")
    with pytest.raises(UserInputError, match="nometa-1.0-py3-none-any.whl"):
        _py_layer(ws, [nowheel])


@pytest.mark.skipif(RUNNING != "3.11", reason="the bytecode test pins Python 3.11")
def test_installed_paths_are_the_files_of_the_layer(ws: Workspace) -> None:
    """What the SBOM links to a wheel's package: every file py_layer wrote for it, no more."""
    from pyimg.actions.py_layer import installed_paths

    wheel = make_wheel(ws.root / "w", Wheel(
        "demo", "2.0", console_scripts={"demo": "demo.cli:main"},
        files={"demo/__init__.py": b"", "demo/cli.py": b"def main():\n    return 0\n",
               "demo-2.0.data/purelib/demo_extra.py": b"X = 1\n",
               "demo-2.0.data/data/share/man/man1/demo.1": b".TH demo\n"}))
    params = {"site_packages": SITE, "prefix": "/usr/local", "python": "/usr/local/bin/python3",
              "python_version": "3.11", "bytecode": True}
    tar = _py_layer(ws, [wheel], **params)
    files = sorted(n for n, m in _names(tar).items() if m.isfile())
    assert installed_paths(wheel, params) == files
