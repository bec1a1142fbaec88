#!/usr/bin/env python3
"""What the per-secret mask mounts cost a sandbox start: the bare `bwrap` spawn of a short
command with /etc plus one mask mount per host secret, against the same spawn with the
sanitized copy of /etc bound once (core/sandbox.py, `sanitized_etc`), interleaved in rounds,
two at a time as a 2-job build runs them (docs/benchmarks.md, "Per-action cost at scale").

    .venv/bin/python tools/bench/sandbox_etc.py [--rounds 6] [--runs 30]
"""

from __future__ import annotations

import argparse
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
from pyimg.core.sandbox import SandboxSpec  # noqa: E402

COMMAND = ("/bin/sh", "-c", "cat in.txt > out.txt")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--runs", type=int, default=30, help="spawns per variant and round")
    args = ap.parse_args()
    if sandbox.probe_isolation() != "bwrap":
        print("bubblewrap does not work on this machine: nothing to compare", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="pyimg-bench-sandbox-etc-"))
    try:
        execroot = tmp / "execroot"
        execroot.mkdir()
        (execroot / "in.txt").write_text("hello\n")
        scratch = tmp / "scratch"
        (scratch / "home").mkdir(parents=True)
        (scratch / "tmp").mkdir()
        variants = {}
        for name, etc_dir in (("masks", None), ("etc copy", sandbox.sanitized_etc(tmp / "state"))):
            plan = sandbox._plan(SandboxSpec(argv=COMMAND, execroot=execroot, env={},
                                             etc_dir=etc_dir), scratch, "bwrap")
            variants[name] = (sandbox._bwrap_argv(plan, COMMAND), plan.env, len(plan.mounts))
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, (argv, env, _) in variants.items():
                def one(_: int, argv: list[str] = argv, env: dict[str, str] = env) -> float:
                    t0 = time.perf_counter()
                    subprocess.run(argv, env=env, cwd="/", stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, check=True)
                    return time.perf_counter() - t0

                with ThreadPoolExecutor(2) as pool:
                    times[name] += pool.map(one, range(args.runs))
    finally:
        sandbox._remove_etc_copy(tmp)
    print("| bare `bwrap` spawn, 2 at a time | mounts | median ms | mean ms | spawns |")
    print("| --- | --- | --- | --- | --- |")
    for name, (_, _, mounts) in variants.items():
        t = times[name]
        print(f"| {name} | {mounts} | {statistics.median(t) * 1000:.1f} | "
              f"{statistics.fmean(t) * 1000:.1f} | {len(t)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
