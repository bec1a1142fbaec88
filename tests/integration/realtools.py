"""Helpers for tests on real components: skopeo, umoci, podman, each set up here to run
rootless and without a daemon."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

__all__ = ["podman_env", "require", "skopeo_inspect", "umoci_unpack"]


def require(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (tools/setup --system installs them)")


def skopeo_inspect(layout: Path, ref: str = "latest") -> dict:
    out = subprocess.run(
        ["skopeo", "inspect", "--raw", f"oci:{layout}:{ref}"], check=True, capture_output=True
    ).stdout
    return json.loads(out)


def skopeo_digest(layout: Path, ref: str = "latest") -> str:
    out = subprocess.run(
        ["skopeo", "inspect", "--format", "{{.Digest}}", f"oci:{layout}:{ref}"],
        check=True, capture_output=True, text=True,
    ).stdout
    return out.strip()


def umoci_unpack(layout: Path, dest: Path, ref: str = "latest") -> Path:
    subprocess.run(
        ["umoci", "unpack", "--rootless", "--image", f"{layout}:{ref}", str(dest)],
        check=True, capture_output=True,
    )
    return dest / "rootfs"


def podman_env(tmp: Path) -> dict[str, str]:
    """Environment for podman on this machine: runc, cgroupfs, vfs, private roots, no network."""
    tmp.mkdir(parents=True, exist_ok=True)
    conf = tmp / "containers.conf"
    conf.write_text(
        '[containers]\nnetns = "none"\n'
        'default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]\n'
        '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
    )
    storage = tmp / "storage.conf"
    storage.write_text(
        f'[storage]\ndriver = "vfs"\nrunroot = "{tmp}/run"\ngraphroot = "{tmp}/graph"\n'
    )
    env = dict(os.environ)
    env.update({"CONTAINERS_CONF": str(conf), "CONTAINERS_STORAGE_CONF": str(storage)})
    return env
