#!/usr/bin/env python3
"""Sandbox benchmark: a short command through `run_sandboxed` against the bare spawn of the very
same bubblewrap command line, both two at a time (as a 2-job build runs them), in the same run.

What pyimg adds to a sandboxed action beyond starting the sandbox itself: its plan, its scratch
directories, reading the output and noticing the exit. A short action (most genrules) is mostly
this; the ratio of the means should stay near 1, and no run should stand far above the median.

    .venv/bin/python tools/bench/sandbox.py [--runs 200] [--parallel 2]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "engine"))

from pyimg.core import sandbox  # noqa: E402
from pyimg.core.sandbox import SandboxSpec, run_sandboxed  # noqa: E402

COMMAND = ("/bin/sh", "-c", "cat in.txt > out.txt")


def timed_runs(one: object, runs: int, parallel: int) -> list[float]:
    def timed(_: int) -> float:
        t0 = time.perf_counter()
        one()  # type: ignore[operator]
        return time.perf_counter() - t0

    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(timed, range(runs)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--parallel", type=int, default=2)
    args = ap.parse_args()
    if sandbox.probe_isolation() != "bwrap":
        print("bubblewrap does not work on this machine: nothing to compare", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="pyimg-bench-sandbox-"))
    try:
        execroot = tmp / "execroot"
        execroot.mkdir()
        (execroot / "in.txt").write_text("hello\n")
        spec = SandboxSpec(argv=COMMAND, execroot=execroot, env={}, timeout=30)
        # The reference: pyimg's own bubblewrap command line for this spec, spawned and waited for.
        scratch = tmp / "scratch"
        (scratch / "home").mkdir(parents=True)
        (scratch / "tmp").mkdir()
        plan = sandbox._plan(spec, scratch, "bwrap")
        argv = sandbox._bwrap_argv(plan, COMMAND)

        def bare() -> None:
            subprocess.run(argv, env=plan.env, cwd="/", stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=True)

        def pyimg() -> None:
            result = run_sandboxed(spec)
            assert result.exit_code == 0, result.output

        results = {}
        for name, one in (("bare", bare), ("pyimg", pyimg), ("bare", bare), ("pyimg", pyimg)):
            results.setdefault(name, []).extend(timed_runs(one, args.runs // 2, args.parallel))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = [("bare `bwrap` spawn of the same command line", results["bare"]),
            ("`run_sandboxed`", results["pyimg"])]
    ref_mean = statistics.fmean(results["bare"])
    print(f"| {args.runs} short commands, {args.parallel} at a time | median ms | mean ms | "
          "mean ratio | runs over 4x the median |")
    print("| --- | --- | --- | --- | --- |")
    for name, times in rows:
        median, mean = statistics.median(times), statistics.fmean(times)
        slow = sum(1 for t in times if t > 4 * median)
        print(f"| {name} | {median * 1000:.1f} | {mean * 1000:.1f} | {mean / ref_mean:.2f}x | "
              f"{slow} of {len(times)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
