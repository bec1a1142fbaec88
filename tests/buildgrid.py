"""A real BuildGrid (the `bgd` server of tools/setup's own virtualenv) on loopback, for tests.

`BuildGrid(tmp).start()` serves an in-memory CAS, ByteStream and action cache (which need no
database) on a free 127.0.0.1 port; `stop()` kills it (a fault the cache tests inject), `start()`
again brings up an empty one. With `execution=True` it also serves Execution and Bots, its
scheduler in a PostgreSQL of Debian's packages that the fixture starts in a temp dir, as an
unprivileged user (`nobody` when the tests run as root). Tests skip when either is missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
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
{scheduler}
instances:
  - name: "{instance}"
    services:
      - !action-cache
        cache: *ac
      - !cas
        storage: *cas
      - !bytestream
        storage: *cas
{execution}
"""

_SCHEDULER = """\
connections:
  - !sql-connection &sql
    connection-string: {database}
    pool-size: 5
    max-overflow: 5
schedulers:
  - !sql-scheduler &scheduler
    sql: *sql
    storage: *cas
    action-cache: *ac
    property-set: !dynamic-property-set
      wildcard-property-keys: [pyimg-kind, pyimg-tools, pyimg-host-tools, pyimg-cache-dirs]
    bot-session-keepalive-timeout: 60
"""
_EXECUTION = """\
      - !execution
        scheduler: *scheduler
"""
POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class BuildGrid:
    """One BuildGrid server process serving a CAS and an action cache."""

    def __init__(self, workdir: Path, instance: str = "", on_disk: bool = False,
                 execution: bool = False) -> None:
        """`on_disk`: the CAS is files under `workdir/cas` (a test can read every blob);
        `execution`: Execution and Bots too, over a PostgreSQL started here."""
        if not BGD.exists():
            pytest.skip(f"BuildGrid is not installed ({BGD}; tools/setup --system installs it)")
        self.workdir = workdir
        self.instance = instance
        self.on_disk = on_disk
        self.database: Postgres | None = None
        if execution:
            self.database = Postgres()
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
        scheduler = execution = ""
        if self.database is not None:
            url = self.database.start()
            subprocess.run([str(BGD), "migrate", "apply", url], check=True, capture_output=True)
            scheduler, execution = _SCHEDULER.format(database=url), _EXECUTION
        config.write_text(_CONFIG.format(port=self.port, instance=self.instance, storage=storage,
                                         scheduler=scheduler, execution=execution))
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
        if self.database is not None:
            self.database.stop()

    def log(self) -> str:
        path = self.workdir / "buildgrid.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""


class Postgres:
    """A throwaway PostgreSQL cluster on a free loopback port, trusting local connections, run
    by an unprivileged user (PostgreSQL refuses root)."""

    def __init__(self) -> None:
        if not (POSTGRES_BIN / "initdb").exists():
            pytest.skip("PostgreSQL is not installed (tools/setup --system installs it)")
        # Under /tmp itself: pytest's own temp dirs are private to root.
        self.dir = Path(tempfile.mkdtemp(prefix="pyimg-pg-"))
        self.dir.chmod(0o755)
        self.user: list[str] = []
        if os.geteuid() == 0:
            os.chown(self.dir, 65534, 65534)  # nobody
            self.user = ["runuser", "-u", "nobody", "--"]
        self.port = free_port()
        self.running = False

    def _run(self, *argv: str) -> None:
        subprocess.run([*self.user, *argv], check=True, capture_output=True, cwd=self.dir)

    def start(self) -> str:
        if not self.running:
            data = self.dir / "data"
            if not data.exists():
                self._run(str(POSTGRES_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U",
                          "bgd")
            self._run(str(POSTGRES_BIN / "pg_ctl"), "-D", str(data), "-l", str(self.dir / "log"),
                      "-o", f"-k {self.dir} -p {self.port} -h 127.0.0.1 -F", "-w", "start")
            self.running = True
        return f"postgresql+psycopg2://bgd@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        if self.running:
            self._run(str(POSTGRES_BIN / "pg_ctl"), "-D", str(self.dir / "data"), "-m",
                      "immediate", "-w", "stop")
            self.running = False
        shutil.rmtree(self.dir, ignore_errors=True)
