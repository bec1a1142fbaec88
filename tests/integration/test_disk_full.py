"""A full disk under the cache root or pyimg-out/ is one clear error (exit 1), and once space is
freed the same build succeeds with the digests of a build from an empty cache.

The full disk is real: a small tmpfs, which needs root (the test skips without it).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from workspace_helpers import Workspace

BIG = 12 << 20  # what the genrule writes: more than the small filesystem holds


@pytest.fixture
def small_fs(tmp_path: Path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _grow(mnt: Path) -> None:
    subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)


def _write_big_target(ws: Workspace) -> None:
    ws.write("p/BUILD.pyimg", f"""
        genrule(name = "big", outs = ["big.bin"], cmd = "head -c {BIG} /dev/zero > $@")
        pkg_tar(name = "t", srcs = [":big"])
        oci_image(name = "img", tars = [":t"])
    """)


def _leftovers(root: Path) -> list[str]:
    return [str(p) for p in root.rglob(".tmp-*")]


def test_full_cache_root(tmp_path, small_fs):
    ws = Workspace(tmp_path / "ws", small_fs / "cache")
    _write_big_target(ws)
    ob = str(tmp_path / "output-base")
    r = ws.run("build", "--output-base", ob, "//p:img")
    assert r.code == 1, r.err
    assert "Traceback" not in r.err
    assert f"no space left on {small_fs / 'cache'}" in r.err, r.err
    assert _leftovers(small_fs) == []

    _grow(small_fs)
    r = ws.run("build", "--output-base", ob, "//p:img")
    assert r.code == 0, r.err
    fresh = Workspace(ws.root, tmp_path / "fresh-cache")
    digest = ws.out("p/img.digest").read_text()
    assert fresh.run("build", "--output-base", str(tmp_path / "ob2"), "//p:img").code == 0
    assert ws.out("p/img.digest").read_text() == digest


def test_full_pyimg_out(tmp_path, small_fs):
    ws = Workspace(small_fs / "ws", tmp_path / "cache")
    _write_big_target(ws)
    ob = str(tmp_path / "output-base")
    r = ws.run("build", "--output-base", ob, "//p:big")
    assert r.code == 1, r.err
    assert "Traceback" not in r.err
    assert f"no space left on {small_fs / 'ws' / 'pyimg-out'}" in r.err, r.err
    assert _leftovers(small_fs) == []

    _grow(small_fs)
    r = ws.run("build", "--output-base", ob, "//p:big")
    assert r.code == 0, r.err
    assert ws.out("p/big.bin").stat().st_size == BIG
