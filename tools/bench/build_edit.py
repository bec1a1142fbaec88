#!/usr/bin/env python3
"""BUILD edit at scale (docs/benchmarks.md): a comment added to one BUILD file of a generated
workspace of N genrules (workspace_gen.py, N/5 packages), or with `--edit attribute` the `cmd` of
its last genrule changed (one target analysed and run again, its dependents' actions hits), then
`pyimg build //...`; the median of `--runs` such builds, for this checkout and, with `--reference
CHECKOUT`, for another one (`/work/main`), interleaved run by run.

    .venv/bin/python tools/bench/build_edit.py --targets 10000 [--runs 5] [--reference /work/main]
    .venv/bin/python tools/bench/build_edit.py --targets 1000 --edit attribute

The reference gets a copy of the built workspace and of the cache (its own output base), so one
cold build serves both; its first build after the copy (which loads and analyses everything
afresh) is not counted, nor is this checkout's first edit (which writes its package records).
"""

from __future__ import annotations

import argparse
import resource
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
from workspace_gen import generate, package_name  # noqa: E402


def build(pyimg: Path, ws: Path, cache: Path) -> tuple[float, float]:
    """Wall-clock and CPU (user + system) seconds of one build; on a shared machine the CPU
    time moves less with the other load."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([str(pyimg), "build", "--disk-cache", str(cache), "//..."], cwd=ws,
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"build in {ws} failed:\n{proc.stderr[-3000:]}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def edit(ws: Path, packages: int, n: int, what: str = "comment") -> None:
    build_file = ws / package_name(packages * 3 // 4) / "BUILD.pyimg"
    text = build_file.read_text()
    if what == "comment":
        build_file.write_text(text + f"# edit {n}\n")
        return
    # The last genrule's command, which the generator writes as `cmd = "cat $(SRCS) > $@"`.
    start = text.rindex('cmd = "')
    end = text.index('",', start)
    build_file.write_text(text[:start] + f'cmd = "cat $(SRCS) > $@ # edit {n}' + text[end:])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--reference", type=Path, help="another checkout, with its .venv")
    ap.add_argument("--edit", choices=["comment", "attribute"], default="comment")
    args = ap.parse_args()
    packages = max(1, args.targets // 5)
    tools = {"this": REPO / ".venv/bin/pyimg"}
    if args.reference is not None:
        tools["reference"] = args.reference / ".venv/bin/pyimg"
    with tempfile.TemporaryDirectory(prefix="pyimg-bench-edit-") as tmp:
        root = Path(tmp)
        generate(root / "ws-this", targets=args.targets, packages=packages)
        t0 = time.perf_counter()
        build(tools["this"], root / "ws-this", root / "cache-this")
        cold = time.perf_counter() - t0
        for name in tools:
            if name != "this":
                shutil.copytree(root / "ws-this", root / f"ws-{name}", symlinks=True)
                shutil.copytree(root / "cache-this", root / f"cache-{name}", symlinks=True)
            edit(root / f"ws-{name}", packages, -1, args.edit)
            build(tools[name], root / f"ws-{name}", root / f"cache-{name}")  # warm-up
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in tools}
        for n in range(args.runs):
            for name in tools:
                edit(root / f"ws-{name}", packages, n, args.edit)
                times[name].append(build(tools[name], root / f"ws-{name}", root / f"cache-{name}"))
    print(f"{args.targets} targets in {packages} packages; cold build {cold:.0f} s")
    print(f"| checkout | BUILD edit ({args.edit}), median of {args.runs}: wall (s) | CPU (s) "
          "| all runs, wall (s) |")
    print("| --- | --- | --- | --- |")
    for name, ts in times.items():
        wall = statistics.median(t for t, _ in ts)
        cpu = statistics.median(c for _, c in ts)
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {', '.join(f'{t:.2f}' for t, _ in ts)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
