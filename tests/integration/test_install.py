"""pyimg installed from its wheel, in a fresh venv outside the checkout, builds the bundled example
with the same digests as the development install."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from realtools import require
from workspace_helpers import REPO, Workspace

pytestmark = pytest.mark.slow


def _run(argv: list[str | Path], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{argv}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _digests(out: str) -> dict[str, str]:
    return {line.split()[0]: line.split()[1] for line in out.splitlines() if line.startswith("//")}


def _bzl_sources() -> set[str]:
    return {p.relative_to(REPO).as_posix() for d in ("engine", "rules")
            for p in (REPO / d).rglob("*.bzl")}


def test_wheel_installed_in_a_fresh_venv_builds_the_example_like_the_dev_install(tmp_path):
    require("gcc", "aarch64-linux-gnu-gcc")
    # Nothing of the checkout or of the dev venv may leak into the installed pyimg.
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSAFEPATH")}
    dist = tmp_path / "dist"
    # python -m build makes the sdist, then the wheel from the unpacked sdist (so both must be
    # whole), in an isolated environment with the backend pyproject.toml names, as `pip install`.
    _run([sys.executable, "-m", "build", "--outdir", dist, REPO], tmp_path, env)
    (sdist,) = dist.glob("pyimg-*.tar.gz")
    (wheel,) = dist.glob("pyimg-*.whl")
    with tarfile.open(sdist) as tar:
        in_sdist = {n.split("/", 1)[1] for n in tar.getnames() if n.endswith(".bzl")}
    assert in_sdist == _bzl_sources()
    with zipfile.ZipFile(wheel) as whl:
        in_wheel = {n for n in whl.namelist() if n.endswith(".bzl")}
    assert len(in_wheel) == len(_bzl_sources()) and "pyimg/_rules/defs.bzl" in in_wheel

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], tmp_path, env)
    _run([venv / "bin/python", "-m", "pip", "install", "-q", wheel], tmp_path, env)
    where = _run([venv / "bin/python", "-c", "import pyimg; print(pyimg.__file__)"], tmp_path, env)
    assert Path(where.strip()).is_relative_to(venv), where

    ws = tmp_path / "ws"
    shutil.copytree(REPO / "examples", ws, ignore=shutil.ignore_patterns("pyimg-out"))
    installed = _run([venv / "bin/pyimg", "build", "--disk-cache", tmp_path / "cache", "//..."],
                     ws, env)

    dev = Workspace(tmp_path / "dev", tmp_path / "dev-cache")
    shutil.copytree(REPO / "examples", dev.root, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("pyimg-out"))
    r = dev.run("build", "//...")
    assert r.code == 0, r.err
    assert _digests(installed) == _digests(r.out)
    assert set(_digests(installed)) == {"//app:image", "//app:image_arm64", "//app:index",
                                        "//base:static"}
