"""--remote-executor against a real BuildGrid (its scheduler in PostgreSQL) with two `pyimg
worker` bots: the example's images come out with the digests of a local build, the commands
having run on the workers; a failing command fails with its output; without workers and with
--remote-local-fallback, nothing is lost; one worker with --jobs 2 holds two leases at once."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from buildgrid import BuildGrid
from workspace_helpers import REPO, Workspace

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("farm")
    grid = BuildGrid(root / "buildgrid", execution=True).start()
    workers = []
    try:
        for i in range(2):
            log = open(root / f"worker{i}.log", "wb")  # noqa: SIM115 - the process keeps it
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "pyimg.cli.main", "worker", "--remote", grid.url,
                 "--cache-dir", str(root / f"worker{i}"), "--bot-id", f"bot{i}"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
            log.close()
        yield grid, root
    finally:
        for w in workers:
            if w.poll() is None:
                os.killpg(w.pid, signal.SIGKILL)
                w.wait()
        grid.stop()


def _digests(out: str) -> dict[str, str]:
    return {line.split()[0]: line.split()[1] for line in out.splitlines() if line.startswith("//")}


def _clone(root: Path, name: str) -> Workspace:
    shutil.copytree(REPO / "examples", root / name / "ws",
                    ignore=shutil.ignore_patterns("pyimg-out"))
    return Workspace(root / name / "ws", root / name / "cache")


def test_the_example_builds_on_two_workers_with_local_digests(farm, tmp_path):
    grid, root = farm
    remote = _clone(tmp_path, "remote")
    r = remote.run("build", "--remote-executor", grid.url, "//...")
    logs = "".join((root / f"worker{i}.log").read_text() for i in range(2))
    assert r.code == 0, r.err + logs
    assert "2 actions ran remotely" in r.err, r.err + logs
    local = _clone(tmp_path, "local")
    here = local.run("build", "//...")
    assert here.code == 0, here.err
    assert _digests(r.out) == _digests(here.out) and len(_digests(here.out)) == 4
    explained = remote.run("explain", "//app:image")
    assert "ran remotely" in explained.out, explained.out
    # Another clone: the server answers Execute from its action cache, nothing runs anywhere.
    again = _clone(tmp_path, "again")
    r2 = again.run("build", "--remote-executor", grid.url, "//...")
    assert r2.code == 0, r2.err
    assert "Build completed: 0 actions run" in r2.err and "0 actions ran remotely" in r2.err
    assert _digests(r2.out) == _digests(here.out)
    explained = again.run("explain", "//app:image")
    assert "ran remotely" not in explained.out and "remote cache hit" in explained.out


def test_a_failing_command_fails_with_its_output(farm, tmp_path):
    grid, _ = farm
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    ws.write("p/BUILD.pyimg", 'genrule(name = "bad", outs = ["o"], '
                              'cmd = "echo no luck >&2; exit 3")\n')
    r = ws.run("build", "--remote-executor", grid.url, "//p:bad")
    assert r.code == 1
    assert "exited with code 3 (remotely" in r.err and "no luck" in r.err, r.err


EMPTY_DIR_RULES = """\
def _empty_impl(ctx):
    d = ctx.actions.declare_directory(ctx.label.name)
    ctx.actions.run_shell(outputs = [d], command = "mkdir -p " + d.path, mnemonic = "Empty")
    return [DefaultInfo(files = [d])]

empty_dir = rule(implementation = _empty_impl, attrs = {})

def _look_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name + ".txt")
    d = ctx.files.dir[0]
    ctx.actions.run_shell(
        inputs = [d], outputs = [out], mnemonic = "Look",
        command = "(test -d {d} && echo there || echo missing; ls -A {d}) > {o}".format(
            d = d.path, o = out.path),
    )
    return [DefaultInfo(files = [out])]

look = rule(implementation = _look_impl, attrs = {"dir": attr.label()})
"""


def test_an_empty_input_directory_is_there_on_the_worker(farm, tmp_path):
    grid, root = farm
    results = {}
    for where, flags in (("remote", ["--remote-executor", grid.url]), ("local", [])):
        ws = Workspace(tmp_path / where, tmp_path / f"{where}-cache")
        ws.write("p/defs.bzl", EMPTY_DIR_RULES)
        ws.write("p/BUILD.pyimg", 'load(":defs.bzl", "empty_dir", "look")\n'
                                  'empty_dir(name = "e")\nlook(name = "l", dir = ":e")\n')
        r = ws.run("build", *flags, "//p:l")
        logs = "".join((root / f"worker{i}.log").read_text() for i in range(2))
        assert r.code == 0, r.err + logs
        results[where] = (r.err, ws.out("p/l.txt").read_text())
    assert "2 actions ran remotely" in results["remote"][0], results["remote"][0]
    assert results["remote"][1] == results["local"][1] == "there\n"


def _worker(grid: BuildGrid, root: Path, name: str, *flags: str) -> subprocess.Popen[bytes]:
    log = open(root / f"{name}.log", "wb")  # noqa: SIM115 - the process keeps it
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "pyimg.cli.main", "worker", "--remote", grid.url,
             "--cache-dir", str(root / name), "--bot-id", name, *flags],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()


def _wait_for(path: Path, text: str, proc: subprocess.Popen[bytes]) -> None:
    """Until the log at `path` says `text` (a safety bound only: no timing is asserted)."""
    deadline = time.monotonic() + 300
    while text not in (path.read_text() if path.exists() else ""):
        assert proc.poll() is None and time.monotonic() < deadline, path.read_text()
        time.sleep(0.2)


def test_sigterm_hands_a_running_lease_back_and_the_worker_exits(tmp_path):
    """A worker stopped in the middle of a lease whose command would run for ten minutes exits
    long before that, and BuildGrid gives the lease to another worker."""
    grid = BuildGrid(tmp_path / "buildgrid", execution=True).start()
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    ws.write("p/BUILD.pyimg", 'genrule(name = "slow", outs = ["o"], '
                              'cmd = "sleep 600; echo late > $@")\n')
    procs: list[subprocess.Popen[bytes]] = []
    try:
        first = _worker(grid, tmp_path, "first")
        procs.append(first)
        build = ws.spawn("build", "--remote-executor", grid.url, "//p:slow",
                         start_new_session=True)
        procs.append(build)
        _wait_for(tmp_path / "first.log", ": lease ", first)
        first.send_signal(signal.SIGTERM)
        # Had the worker waited for its lease, this would be ten minutes from now.
        assert first.wait(timeout=590) == 0
        log = (tmp_path / "first.log").read_text()
        assert "handed back to the server" in log and "0 leases done" in log, log
        second = _worker(grid, tmp_path, "second")
        procs.append(second)
        _wait_for(tmp_path / "second.log", ": lease ", second)  # BuildGrid queued it again
        assert build.poll() is None  # the build still waits for its action
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=590) == 0
    finally:
        _stop_all(procs, grid)


def _stop_all(procs: list[subprocess.Popen[bytes]], grid: BuildGrid) -> None:
    """Kill what still runs (each in its own session), collect it, and stop the server."""
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.communicate()  # closes the build's pipes too
    grid.stop()


def test_one_worker_with_jobs_runs_two_leases_at_once(tmp_path):
    """`pyimg worker --jobs 2` holds two leases at the same time: both commands would run for
    ten minutes, so the second lease reaches it only if the first is still running. SIGTERM
    then hands both back."""
    grid = BuildGrid(tmp_path / "buildgrid", execution=True).start()
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    ws.write("p/BUILD.pyimg", "".join(
        f'genrule(name = "slow{n}", outs = ["o{n}"], cmd = "sleep 600; echo {n} > $@")\n'
        for n in range(2)))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        worker = _worker(grid, tmp_path, "farm", "--jobs", "2")
        procs.append(worker)
        build = ws.spawn("build", "--jobs", "2", "--remote-executor", grid.url, "//p:all",
                         start_new_session=True)
        procs.append(build)
        _wait_for(tmp_path / "farm.log", "farm-0: lease ", worker)
        _wait_for(tmp_path / "farm.log", "farm-1: lease ", worker)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=590) == 0
        log = (tmp_path / "farm.log").read_text()
        assert log.count("handed back to the server") == 2 and "0 leases done" in log, log
    finally:
        _stop_all(procs, grid)
