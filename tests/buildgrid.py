"""A real BuildGrid (the `bgd` server of tools/setup's own virtualenv) on loopback, for tests.

`BuildGrid(tmp).start()` serves an in-memory CAS, ByteStream and action cache (which need no
database) on a free 127.0.0.1 port; `stop()` kills it (a fault the cache tests inject), `start()`
again brings up an empty one. `lanes=N` serves N more instances ("lane0" ...), each with an
action cache of its own (their CAS is shared: content-addressed, it cannot mix results up): one
server shared by a test module gives every test a clean lane (`Lane`, from `lane()`) without a
start-up each. Each instance costs BuildGrid about half a second of start-up. With `execution=True` it also serves Execution and Bots, its
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
{caches}
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
{lanes}
"""
_CACHE = """\
  - !lru-action-cache &ac{suffix}
    storage: *cas
    max-cached-refs: 100000
    allow-updates: true
    cache-failed-actions: false
"""
_LANE = """\
  - name: "lane{n}"
    services:
      - !action-cache
        cache: *ac{n}
      - !cas
        storage: *cas
      - !bytestream
        storage: *cas
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
                 execution: bool = False, lanes: int = 0) -> None:
        """`on_disk`: the CAS is files under `workdir/cas` (a test can read every blob);
        `execution`: Execution and Bots too, over a PostgreSQL started here; `lanes`: that many
        more instances, each with its own storage."""
        if not BGD.exists():
            pytest.skip(f"BuildGrid is not installed ({BGD}; tools/setup --system installs it)")
        self.workdir = workdir
        self.instance = instance
        self.on_disk = on_disk
        self.lanes = lanes
        self._next_lane = 0
        self.database: Postgres | None = None
        if execution:
            self.database = Postgres()
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"grpc://127.0.0.1:{self.port}"

    def lane(self) -> Lane:
        """An instance of this server that no other test has used (a clean CAS and cache)."""
        if self._next_lane >= self.lanes:
            raise RuntimeError(f"all {self.lanes} lanes of this BuildGrid are used")
        self._next_lane += 1
        return Lane(self, f"lane{self._next_lane - 1}")

    def start(self) -> BuildGrid:
        config = self.workdir / "buildgrid.yml"
        suffixes = ["", *map(str, range(self.lanes))]
        storage = (f"  - !disk-storage &cas\n    path: {self.workdir / 'cas'}" if self.on_disk
                   else "  - !lru-storage &cas\n    size: 512MB")
        caches = "".join(_CACHE.format(suffix=s) for s in suffixes).rstrip("\n")
        lanes = "".join(_LANE.format(n=n) for n in range(self.lanes)).rstrip("\n")
        scheduler = execution = ""
        if self.database is not None:
            url = self.database.start()
            subprocess.run([str(BGD), "migrate", "apply", url], check=True, capture_output=True)
            scheduler, execution = _SCHEDULER.format(database=url), _EXECUTION
        config.write_text(_CONFIG.format(port=self.port, instance=self.instance, storage=storage,
                                         caches=caches, scheduler=scheduler,
                                         execution=execution, lanes=lanes))
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


class Lane:
    """One instance of a shared BuildGrid: `flags` point a build at it; `stop()` kills the
    whole server (the next test's fixture starts it again, empty)."""

    def __init__(self, server: BuildGrid, instance: str) -> None:
        self.server = server
        self.instance = instance
        self.url = server.url
        self.workdir = server.workdir

    @property
    def flags(self) -> list[str]:
        return self.flags_via(self.url)

    def flags_via(self, url: str) -> list[str]:
        """The flags of a build that reaches this lane through `url` (a proxy in front)."""
        return ["--remote-cache", url, "--remote-instance-name", self.instance]

    def stop(self) -> None:
        self.server.stop()


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
