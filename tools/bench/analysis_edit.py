#!/usr/bin/env python3
"""Loading and analysis after one genrule's `cmd` is edited (docs/benchmarks.md, "A changed
target at scale"): the workspace of workspace_gen.py (N genrules, N/5 packages) is analysed once
(`//...`, no action runs), then `--runs` times its last-but-one package's last genrule gets a new
`cmd` and `//...` is analysed again, each in a fresh process as `pyimg build` would; printed:
the medians of wall-clock and CPU seconds (CPU moves less on a shared machine), for this checkout
and, with `--reference CHECKOUT`, for another one's engine (its `engine/` and `rules/`), run by
run interleaved.

    .venv/bin/python tools/bench/analysis_edit.py --targets 10000 [--runs 5] [--reference /work/main]

It measures what the build path's `analyze()` does (build/build.py), without execution, so that a
10,000-target figure needs no 10,000-action cold build.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
from build_edit import edit  # noqa: E402
from workspace_gen import generate  # noqa: E402

# One analysis in a fresh process: prints "wall cpu".
_ANALYZE = """
import sys, time
from pathlib import Path
from pyimg.build.build import analyze
from pyimg.core.session import Session
session = Session.open(Path(sys.argv[1]), sys.argv[2], None)
digests = session.digest_cache()
wall, cpu = time.perf_counter(), time.process_time()
analyze(session, ["//..."], None, digests)
print(time.perf_counter() - wall, time.process_time() - cpu)
digests.save()
"""


def analyse(engine: Path | None, ws: Path, cache: Path) -> tuple[float, float]:
    env = dict(os.environ)
    if engine is not None:
        env["PYTHONPATH"] = str(engine)  # ahead of this checkout's editable install
    proc = subprocess.run([str(REPO / ".venv/bin/python"), "-c", _ANALYZE, str(ws), str(cache)],
                          cwd=ws, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"analysis in {ws} failed:\n{proc.stderr[-3000:]}")
    wall, cpu = proc.stdout.split()
    return float(wall), float(cpu)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--reference", type=Path, help="another checkout (its engine/ and rules/)")
    args = ap.parse_args()
    packages = max(1, args.targets // 5)
    with tempfile.TemporaryDirectory(prefix="pyimg-bench-analysis-") as tmp:
        root = Path(tmp)
        engines: dict[str, Path | None] = {"this": None}
        if args.reference is not None:
            # A copy of its committed tree: the reference's engine runs on this venv's packages.
            subprocess.run(f"git -C {args.reference} archive HEAD engine rules | tar -x -C {root}",
                           shell=True, check=True)
            engines["reference"] = root / "engine"
        generate(root / "ws-this", targets=args.targets, packages=packages)
        for name in engines:
            if name != "this":
                shutil.copytree(root / "ws-this", root / f"ws-{name}")
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in engines}
        for n in range(-2, args.runs):  # the first analysis, then one edit, are not counted
            for name, engine in engines.items():
                ws = root / f"ws-{name}"
                if n > -2:
                    edit(ws, packages, n, "attribute")
                t = analyse(engine, ws, root / f"cache-{name}")
                if n >= 0:
                    times[name].append(t)
    print(f"{args.targets} targets in {packages} packages; one genrule's cmd edited, `//...` analysed")
    print(f"| checkout | median of {args.runs}: wall (s) | CPU (s) | all runs, wall / CPU (s) |")
    print("| --- | --- | --- | --- |")
    for name, ts in times.items():
        wall = statistics.median(t for t, _ in ts)
        cpu = statistics.median(c for _, c in ts)
        runs = ", ".join(f"{t:.2f} / {c:.2f}" for t, c in ts)
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {runs} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
