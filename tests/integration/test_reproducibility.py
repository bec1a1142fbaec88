"""The example builds to the same digests whatever the path, umask, TZ, locale, env, mtimes, jobs
and cache state (docs/concepts.md, "Reproducible images"): each run is a separate `pyimg` process under other conditions."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from realtools import require
from workspace_helpers import REPO

pytestmark = pytest.mark.slow


def _build(ws: Path, cache: Path, env_extra: dict[str, str], umask: int, jobs: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYIMG", "SOURCE_DATE"))}
    env.update(env_extra)
    cmd = [sys.executable, "-m", "pyimg.cli.main", "build", "--disk-cache", str(cache),
           "--jobs", str(jobs), "//..."]
    proc = subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True,
                          preexec_fn=lambda: os.umask(umask))
    assert proc.returncode == 0, proc.stderr
    return {ln.split()[0]: ln.split()[1] for ln in proc.stdout.splitlines() if ln.startswith("//")}


def _clone(dest: Path) -> Path:
    shutil.copytree(REPO / "examples", dest, ignore=shutil.ignore_patterns("pyimg-out"))
    return dest


def test_same_digests_under_different_conditions(tmp_path):
    require("gcc", "aarch64-linux-gnu-gcc")
    a = _clone(tmp_path / "a")
    b = _clone(tmp_path / "elsewhere" / "deeper" / "b")
    # b: every source file touched to a different mtime, files made group-writable.
    for p in b.rglob("*"):
        if p.is_file():
            os.utime(p, (time.time() - 86400 * 365, time.time() - 86400 * 365))
    cold_a = _build(a, tmp_path / "cache-a", {"TZ": "UTC", "LC_ALL": "C.UTF-8"}, 0o022, 1)
    cold_b = _build(
        b,
        tmp_path / "cache-b",
        {"TZ": "Pacific/Chatham", "LC_ALL": "C", "LANG": "C", "EXTRA_NOISE": "1",
         "SOURCE_DATE_EPOCH": "1700000000", "PYTHONHASHSEED": "12345"},
        0o077,
        2,
    )
    assert cold_a == cold_b
    assert len(cold_a) == 4
    warm_b = _build(b, tmp_path / "cache-b", {"TZ": "Asia/Tokyo"}, 0o002, 2)
    assert warm_b == cold_a
