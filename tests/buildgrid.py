"""A real BuildGrid (the `bgd` server of tools/setup's own virtualenv) on loopback, for tests.

`BuildGrid(tmp).start()` serves an in-memory CAS, ByteStream and action cache (which need no
database) on a free 127.0.0.1 port; `stop()` kills it (a fault the cache tests inject), `start()`
again brings up an empty one. Tests skip when the server is not installed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from workspace_helpers import REPO

BGD = REPO / ".venv-buildgrid" / "bin" / "bgd"

_CONFIG = """\
server:
  - !channel
    address: "127.0.0.1:{port}"
    insecure-mode: true
authorization:
  method: none
storages:
{storage}
caches:
  - !lru-action-cache &ac
    storage: *cas
    max-cached-refs: 100000
    allow-updates: true
    cache-failed-actions: false
instances:
  - name: "{instance}"
    services:
      - !action-cache
        cache: *ac
      - !cas
        storage: *cas
      - !bytestream
        storage: *cas
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BuildGrid:
    """One BuildGrid server process serving a CAS and an action cache."""

    def __init__(self, workdir: Path, instance: str = "", on_disk: bool = False) -> None:
        """`on_disk`: the CAS is files under `workdir/cas` (a test can read every blob)."""
        if not BGD.exists():
            pytest.skip(f"BuildGrid is not installed ({BGD}; tools/setup --system installs it)")
        self.workdir = workdir
        self.instance = instance
        self.on_disk = on_disk
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"grpc://127.0.0.1:{self.port}"

    def start(self) -> BuildGrid:
        config = self.workdir / "buildgrid.yml"
        storage = (f"  - !disk-storage &cas\n    path: {self.workdir / 'cas'}" if self.on_disk
                   else "  - !lru-storage &cas\n    size: 512MB")
        config.write_text(_CONFIG.format(port=self.port, instance=self.instance, storage=storage))
        log = open(self.workdir / "buildgrid.log", "ab")  # noqa: SIM115 - the process keeps it
        self.proc = subprocess.Popen([str(BGD), "server", "start", str(config)],
                                     cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bgd exited: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"bgd did not listen: {self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def log(self) -> str:
        path = self.workdir / "buildgrid.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""
