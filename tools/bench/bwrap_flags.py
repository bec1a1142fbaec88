#!/usr/bin/env python3
"""What each bubblewrap flag of pyimg's sandbox costs (docs/benchmarks.md, "Per-action cost at
scale"): spawns `sh -c true` under variants of the flag set, interleaved, one at a time, and
prints the user and system CPU of bwrap and all it started and the wall per spawn of each variant.

It does not go through `run_sandboxed`: it isolates what bwrap itself costs, flag by flag, so a
proposed change to `_bwrap_argv` (a minimal /dev, a namespace less) can be judged before it is
made. The variants that drop a namespace are measuring aids only: pyimg promises the network,
pid, ipc and uts isolation (docs/sandbox-secrets-caches.md).

    .venv/bin/python tools/bench/bwrap_flags.py [--spawns 150]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import tempfile
import time

from action_cost import become_subreaper, reaping_orphans

_NAMESPACES = ("user", "ipc", "pid", "net", "uts", "cgroup")
_DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")


def _system_dirs() -> list[str]:
    """The system directories as pyimg shows them: read-only binds, or the merged-/usr links."""
    args: list[str] = []
    for d in ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(d):
            args += ["--symlink", os.readlink(d), d]
        elif os.path.isdir(d):
            args += ["--ro-bind", d, d]
    return args


def _variants(scratch: str) -> dict[str, list[str]]:
    def base(drop: str = "") -> list[str]:
        args = [shutil.which("bwrap") or "bwrap"]
        args += [f"--unshare-{ns}" for ns in _NAMESPACES if ns != drop]
        args += ["--uid", "0", "--gid", "0", "--cap-drop", "ALL"]
        if drop != "uts":
            args += ["--hostname", "localhost"]  # bwrap refuses it without a uts namespace
        args += ["--die-with-parent", "--new-session"]
        if drop != "pid":
            args += ["--proc", "/proc"]
        return args

    binds: list[str] = []
    for name in ("execroot", "home", "tmp"):
        os.makedirs(os.path.join(scratch, name), exist_ok=True)
        binds += ["--bind", os.path.join(scratch, name), f"/pyimg/{name}"]
    rest = binds + _system_dirs()
    minimal_dev = ["--tmpfs", "/dev"]
    for node in _DEV_NODES:
        if os.path.exists(f"/dev/{node}"):
            minimal_dev += ["--dev-bind", f"/dev/{node}", f"/dev/{node}"]
    for i, name in enumerate(("stdin", "stdout", "stderr")):
        minimal_dev += ["--symlink", f"/proc/self/fd/{i}", f"/dev/{name}"]
    minimal_dev += ["--symlink", "/proc/self/fd", "/dev/fd"]
    three_nodes = ["--tmpfs", "/dev"]
    for node in ("null", "zero", "urandom"):
        three_nodes += ["--dev-bind", f"/dev/{node}", f"/dev/{node}"]
    dev = ["--dev", "/dev"]
    variants = {
        "as pyimg (--dev)": base() + dev + rest,
        "minimal /dev": base() + minimal_dev + rest,
        "/dev: null zero urandom": base() + three_nodes + rest,
        "no /dev": base() + rest,
        "only /usr, no /dev": base() + _system_dirs(),
    }
    for ns in ("net", "pid", "ipc", "uts", "cgroup"):
        variants[f"without {ns} ns"] = base(ns) + dev + rest
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spawns", type=int, default=150, help="spawns per variant")
    args = parser.parse_args()
    become_subreaper()  # else the command's CPU is lost (see there)
    command = ["--chdir", "/", "--", "/bin/sh", "-c", "true"]
    with tempfile.TemporaryDirectory(prefix="pyimg-bwrap-flags-") as scratch:
        variants = _variants(scratch)
        totals = {name: [0.0, 0.0, 0.0] for name in variants}
        for _ in range(args.spawns):
            for name, argv in variants.items():  # interleaved: load drifts hit all alike
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                started = time.perf_counter()
                with subprocess.Popen(argv + command) as proc, reaping_orphans(proc.pid):
                    proc.wait()  # before the reaper's last sweep, which would take its status
                if proc.returncode != 0:
                    raise SystemExit(f"{name}: exit {proc.returncode}")
                wall = time.perf_counter() - started
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                totals[name][0] += after.ru_utime - before.ru_utime
                totals[name][1] += after.ru_stime - before.ru_stime
                totals[name][2] += wall
    print(f"{'variant':24s} {'user ms':>8s} {'sys ms':>8s} {'wall ms':>8s}  (per spawn)")
    for name, (user, system, wall) in totals.items():
        n = args.spawns
        print(f"{name:24s} {1000 * user / n:8.2f} {1000 * system / n:8.2f} {1000 * wall / n:8.2f}")


if __name__ == "__main__":
    main()
