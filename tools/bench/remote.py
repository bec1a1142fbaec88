#!/usr/bin/env python3
"""Remote cache and execution benchmark (docs/remote.md) on the engine benchmark's workspace
(200 packages, 1,000 targets), against a BuildGrid on loopback (tools/setup --system):

    .venv/bin/python tools/bench/remote.py [--small]

- a cold build (empty disk cache, fresh output base) with a warm remote cache, against a no-op
  with a warm local cache (goal <= 10x) and against a cold local build (goal <= 0.2x);
- remote execution with two `pyimg worker` bots on loopback, against a cold local build
  (reported; no goal on 2 cores);
- the bytes a re-build uploads after one source edit (goal: only that action's outputs);
- the floor of any cold build: the same build served by a warm local cache, with a fresh output
  base and no reuse of earlier analyses (loading, analysis, materializing; no network), and the
  CPU seconds pyimg and BuildGrid spent on the cold build with a warm remote cache;
- the protocol's floor: 1,000 bare `GetActionResult` calls to the same BuildGrid from 16
  threads through the client's gate, nothing else done: wall, client CPU and server CPU.

`--small` runs the same steps on 60 targets (a check that the script works, not a measure).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests"))
from buildgrid import BuildGrid  # noqa: E402
from workspace_gen import generate, package_name  # noqa: E402

from engine import make_workspace, run  # noqa: E402

PYIMG = [str(REPO / ".venv/bin/pyimg")]


def _uploaded(stderr: str) -> int:
    m = re.search(r"results uploaded \((\d+) bytes\)", stderr)
    return int(m.group(1)) if m else -1


def _workers(url: str, root: Path, n: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([*PYIMG, "worker", "--remote", url, "--cache-dir",
                              str(root / f"worker{i}")], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
            for i in range(n)]


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process `pid` so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _rpc_floor(url: str, server_pid: int, calls: int = 1000,
               threads: int = 16) -> tuple[float, float, float]:
    """Wall, client CPU and server CPU seconds of `calls` bare GetActionResult calls (for a
    digest the cache lacks) from `threads` threads through pyimg's CallGate."""
    import threading

    import grpc
    from pyimg.remote._proto.build.bazel.remote.execution.v2 import (
        remote_execution_pb2 as re_pb2,
    )
    from pyimg.remote._proto.build.bazel.remote.execution.v2 import (
        remote_execution_pb2_grpc as re_grpc,
    )
    from pyimg.remote.client import open_channel
    from pyimg.remote.flow import CallGate

    channel = open_channel(url)
    stub = re_grpc.ActionCacheStub(channel)
    gate = CallGate()
    request = re_pb2.GetActionResultRequest(
        action_digest=re_pb2.Digest(hash="0" * 64, size_bytes=1))

    def call() -> None:
        try:
            gate.call(stub.GetActionResult, request, timeout=60)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                raise

    def work(n: int) -> None:
        for _ in range(n):
            call()

    call()  # the channel connected
    pool = [threading.Thread(target=work, args=(calls // threads,)) for _ in range(threads)]
    server0, start = _process_cpu(server_pid), time.perf_counter()
    client0 = time.process_time()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall = time.perf_counter() - start
    client, server = time.process_time() - client0, _process_cpu(server_pid) - server0
    channel.close()
    return wall, client, server


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="60 targets: check the script works")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pyimg-bench-remote-") as tmp:
        root = Path(tmp)
        ws = root / "ws"
        if args.small:
            generate(ws, targets=60, packages=20)
        else:
            make_workspace(ws)

        def build(cache: str, *flags: str, where: Path = ws, base: str = "",
                  env: dict[str, str] | None = None) -> tuple[float, str]:
            return run([*PYIMG, "build", "--disk-cache", str(root / cache), "--output-base",
                        str(root / (base or f"base-{cache}")), *flags, "//..."], where,
                       env=dict(os.environ, **env) if env else None)

        grid = BuildGrid(root / "buildgrid", execution=True).start()
        workers: list[subprocess.Popen[bytes]] = []
        try:
            cold_local, _ = build("local")
            noop_local, _ = build("local")
            floor, _ = build("local", base="base-floor",
                             env={"PYIMG_ANALYSIS_REUSE": "0", "PYIMG_FAST_NOOP": "0"})
            build("uploader", "--remote-cache", grid.url)
            assert grid.proc is not None
            grid_cpu, pyimg_cpu = _process_cpu(grid.proc.pid), _children_cpu()
            warm_remote, err = build("downloader", "--remote-cache", grid.url)
            grid_cpu = _process_cpu(grid.proc.pid) - grid_cpu
            pyimg_cpu = _children_cpu() - pyimg_cpu
            rpc_wall, rpc_client, rpc_server = _rpc_floor(grid.url, grid.proc.pid)
            hits = int(re.search(r"(\d+) hits, 0 misses", err).group(1))  # type: ignore[union-attr]
            # One source edited: what a re-build sends.
            src = ws / package_name(3) / "t0.txt"
            src.write_text("edited\n")
            _, err = build("uploader", "--remote-cache", grid.url)
            edit_bytes = _uploaded(err)
            src.write_text("edited again\n")
            workers = _workers(grid.url, root, 2)
            clone = root / "clone"
            shutil.copytree(ws, clone, ignore=shutil.ignore_patterns("pyimg-out"))
            time.sleep(1)  # the workers open their bot sessions
            executed, err = build("exec", "--remote-executor", grid.url, where=clone)
            ran = re.search(r"(\d+) actions ran remotely", err)
        finally:
            for w in workers:
                os.killpg(w.pid, signal.SIGKILL)
                w.wait()
            grid.stop()
    print("| measurement | seconds | ratio |")
    print("| --- | --- | --- |")
    print(f"| cold local build | {cold_local:.2f} | 1 |")
    print(f"| no-op, warm local cache | {noop_local:.3f} | |")
    print(f"| cold build, warm remote cache | {warm_remote:.2f} | {warm_remote / noop_local:.1f}x "
          f"the no-op (goal <= 10x); {warm_remote / cold_local:.2f}x the cold build (goal <= 0.2x) |")
    print(f"| floor: the same build served by a warm local cache, fresh output base, no "
          f"analysis reuse | {floor:.2f} | {floor / noop_local:.1f}x the no-op; "
          f"{floor / cold_local:.2f}x the cold build |")
    print(f"| CPU of the cold build with a warm remote cache: pyimg, BuildGrid | "
          f"{pyimg_cpu:.2f}, {grid_cpu:.2f} | BuildGrid {grid_cpu / hits * 1000:.2f} ms a hit "
          f"({hits} hits) |")
    print(f"| protocol floor: 1,000 bare GetActionResult calls, 16 threads: wall; client CPU, "
          f"BuildGrid CPU | {rpc_wall:.2f} | {rpc_client:.2f} s, {rpc_server:.2f} s |")
    print(f"| remote execution, 2 workers ({ran.group(1) if ran else '?'} actions remote) | "
          f"{executed:.2f} | {executed / cold_local:.2f}x the cold local build |")
    print(f"| bytes uploaded by a re-build after one source edit | {edit_bytes} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
