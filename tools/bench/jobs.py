#!/usr/bin/env python3
"""Action slots against cores: cold builds of one generated genrule workspace with pyimg's
default number of parallel actions and with `--jobs` = the cores, interleaved, in one run
(docs/benchmarks.md, "One more action than cores").

    .venv/bin/python tools/bench/jobs.py [--targets 10000] [--rounds 2] [--jobs 3,4]

Prints per setting the median wall time, its ratio to `--jobs <cores>`, and the machine's idle
CPU time during the build (from /proc/stat: what no process used, the kernel's own threads
included), which is what the extra slots are meant to fill.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "engine"))
from pyimg.build.request import cores  # noqa: E402
from workspace_gen import generate  # noqa: E402

PYIMG = str(REPO / ".venv/bin/pyimg")


def _idle_seconds() -> float:
    """The machine's idle + iowait time so far, in seconds (all cores summed)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    return (int(fields[3]) + int(fields[4])) / os.sysconf("SC_CLK_TCK")


def cold_build(ws: Path, cache: Path, jobs: int | None) -> tuple[float, float]:
    """(wall seconds, idle core-seconds) of a build of //... with nothing cached."""
    shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(ws / "pyimg-out", ignore_errors=True)
    argv = [PYIMG, "build", "//...", "--disk-cache", str(cache / "disk"),
            "--output-base", str(cache / "base")]
    if jobs:
        argv += ["--jobs", str(jobs)]
    idle, start = _idle_seconds(), time.monotonic()
    subprocess.run(argv, cwd=ws, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - start, _idle_seconds() - idle


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--jobs", default="", help="more --jobs values to compare, e.g. 3,4")
    args = ap.parse_args()
    n = cores()
    settings: list[tuple[str, int | None]] = [(f"--jobs {n} (the cores)", n), ("default", None)]
    settings += [(f"--jobs {j}", int(j)) for j in args.jobs.split(",") if j]
    with tempfile.TemporaryDirectory(prefix="pyimg-bench-jobs-") as tmp:
        ws, cache = Path(tmp) / "ws", Path(tmp) / "cache"
        generate(ws, targets=args.targets, packages=max(1, args.targets // 5))
        walls: dict[str, list[float]] = {name: [] for name, _ in settings}
        idles: dict[str, list[float]] = {name: [] for name, _ in settings}
        for r in range(args.rounds):
            # Alternate who goes first: the disk's state after a deletion favours neither.
            for name, jobs in settings if r % 2 == 0 else settings[::-1]:
                wall, idle = cold_build(ws, cache, jobs)
                walls[name].append(wall)
                idles[name].append(idle)
                print(f"round {r + 1}: {name}: {wall:.1f} s, idle {idle:.1f} core-s", flush=True)
    reference = statistics.median(walls[settings[0][0]])
    print(f"\n{args.targets} genrules, cold, {n} cores, load {os.getloadavg()[0]:.1f}")
    for name, _ in settings:
        wall = statistics.median(walls[name])
        print(f"  {name:24s} median {wall:6.1f} s  ratio {wall / reference:.2f}  "
              f"idle {statistics.median(idles[name]):.1f} core-s")


if __name__ == "__main__":
    main()
