#!/usr/bin/env python3
"""Per-action cost at scale (docs/benchmarks.md, "Per-action cost at scale"): a cold build and
a root-source edit of the genrule workspace of workspace_gen.py, interleaved between engine trees.

Each tree is a directory holding pyimg's `engine` (for instance `git archive main engine | tar -x
-C /tmp/base`); it runs with this checkout's venv and PYTHONPATH set to that engine. Per round
and tree: a cold build (fresh disk cache and output base), then the root target's source is
edited and built again (most of the graph re-runs). Prints wall and CPU seconds (pyimg and its
commands) per run and their medians.

    .venv/bin/python tools/bench/action_cost.py --targets 1000 --rounds 3 /tmp/base engine
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
from workspace_gen import generate, package_name  # noqa: E402

_PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


def timed_build(engine: Path, ws: Path, cache: Path, base: Path, jobs: int) -> tuple[float, float]:
    env = dict(os.environ, PYTHONPATH=str(engine.resolve()))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [str(REPO / ".venv/bin/pyimg"), "build", "//...", "--jobs", str(jobs), "--color", "no",
         "--disk-cache", str(cache), "--output-base", str(base)],
        cwd=ws, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    with reaping_orphans(proc.pid):
        _, err = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, proc.args, stderr=err)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def become_subreaper() -> None:
    """Adopt our descendants' orphans, so that their CPU reaches RUSAGE_CHILDREN.

    Why: with a pid namespace, bwrap's outer process exits before it reaps the namespace's
    pid-1 init, which has reaped the command: both are orphaned to the host's init and their
    CPU never reaches the process that measures (a 0.15 s shell loop under bwrap counted
    0.002 s). So without this, the CPU figures hold pyimg and bwrap, not the commands."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


@contextlib.contextmanager
def reaping_orphans(main_pid: int) -> Iterator[None]:
    """Reap the orphans adopted while `main_pid` runs (a thread, so that a large build leaves
    no pile of zombies), then those still exiting after; `main_pid` is left to its Popen."""
    def reap() -> None:
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid == main_pid:
                return  # the build is over: the rest are reaped below
            os.waitpid(info.si_pid, 0)

    reaper = threading.Thread(target=reap, name="orphan-reaper", daemon=True)
    reaper.start()
    yield
    reaper.join()
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            return


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trees", nargs="+", type=Path, help="directories holding an `engine`")
    ap.add_argument("--targets", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    args = ap.parse_args()
    become_subreaper()
    tmp = Path(tempfile.mkdtemp(prefix="pyimg-bench-action-cost-"))
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        ws = tmp / "ws"
        generate(ws, targets=args.targets, packages=max(1, args.targets // 5))
        root_src = ws / package_name(0) / "t0.txt"
        for rnd in range(args.rounds):
            for tree in args.trees:
                engine = tree / "engine" if (tree / "engine").is_dir() else tree
                cache, base = tmp / "cache", tmp / "base"
                for d in (cache, base):
                    shutil.rmtree(d, ignore_errors=True)
                shutil.rmtree(ws / "pyimg-out", ignore_errors=True)
                subprocess.run(["sync"], check=True)
                cold = timed_build(engine, ws, cache, base, args.jobs)
                root_src.write_text(f"root edited in round {rnd} for {tree}\n")
                edit = timed_build(engine, ws, cache, base, args.jobs)
                for scenario, figures in (("cold", cold), ("root edit", edit)):
                    results.setdefault((str(tree), scenario), []).append(figures)
                    print(f"round {rnd} {tree} {scenario}: {figures[0]:.1f} s wall, "
                          f"{figures[1]:.1f} s CPU", flush=True)
    finally:
        subprocess.run(["chmod", "-R", "u+rwX", str(tmp)], check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"| {args.targets} genrules, --jobs {args.jobs} | median wall s | median CPU s | runs |")
    print("| --- | --- | --- | --- |")
    for (tree, scenario), runs in results.items():
        walls = [w for w, _ in runs]
        cpus = [c for _, c in runs]
        print(f"| {scenario}, {tree} | {statistics.median(walls):.1f} | "
              f"{statistics.median(cpus):.1f} | {', '.join(f'{w:.1f}' for w in walls)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
