#!/usr/bin/env python3
"""Lock-file layers benchmark (docs/benchmarks.md, "Lock files"): a layer of packages installed
from a lock file by pyimg, against the ecosystem's own installer on the same files, in the same
run, reported as a ratio.

    .venv/bin/python tools/bench/lockfiles.py [--runs 5] [--part python]

Python: a cold `py_layer` of a 50-package set whose wheels are in the repository cache (the
action runs, nothing is downloaded), against `pip install --no-deps --no-index --target` of the
same wheels, each with and without bytecode (pip compiles by default). Goal: at most 0.5 of
pip's time. The wheels are made here (each 40 modules of about
4 KiB, every fifth with a console script), served from a file:// index, locked and fetched once
before timing.

Each part is one function of PARTS taking (scratch directory, runs) and returning its rows.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests"))
PYIMG = [str(REPO / ".venv/bin/pyimg")]


def _run(args: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return elapsed


# -- Python -----------------------------------------------------------------------------------


def _python_wheels(out: Path, packages: int = 50, modules: int = 40) -> list[Path]:
    from python_fixtures import Wheel, make_wheel

    wheels = []
    body = "".join(f"def f{i}(x):\n    return x * {i} + len('{'x' * 40}')\n\n" for i in range(40))
    for p in range(packages):
        name = f"bench-pkg{p:02d}"
        dist = name.replace("-", "_")
        files = {f"{dist}/__init__.py": b"VERSION = '1.0'\n"}
        for m in range(modules):
            files[f"{dist}/mod{m:02d}.py"] = f"# {name} module {m}\n{body}".encode()
        scripts = {f"{name}-run": f"{dist}:VERSION"} if p % 5 == 0 else {}
        wheels.append(make_wheel(out, Wheel(name, "1.0", files=files, console_scripts=scripts)))
    return wheels


def python_part(scratch: Path, runs: int) -> list[tuple[str, float, float]]:
    from python_fixtures import publish_index, sha256_file

    wheels = _python_wheels(scratch / "dist")
    publish_index(scratch / "www", wheels)
    ws = scratch / "ws"
    ws.mkdir()
    (ws / "requirements.txt").write_text("".join(
        f"{w.name.split('-')[0].replace('_', '-')}==1.0 --hash=sha256:{sha256_file(w)}\n"
        for w in wheels))
    (ws / "MODULE.pyimg").write_text(
        'pip_lock(name = "pypi", requirements = "requirements.txt", python_version = "3.11",\n'
        f'         index_url = "file://{scratch}/www/simple")\n')
    cache = scratch / "cache"
    flags = ["--disk-cache", str(cache)]
    _run([*PYIMG, "lock", *flags], ws)
    _run([*PYIMG, "fetch", *flags], ws)
    rows = []
    # pip byte-compiles by default: each side once without bytecode, once with it.
    for bytecode, pip_flag in ((False, "--no-compile"), (True, "--compile")):
        pyimg_times, pip_times = [], []
        for i in range(runs):
            # A new mtime each run: a new action key, so the layer is written again (cold),
            # while the wheels come from the repository cache.
            (ws / "BUILD.pyimg").write_text(
                'load("@pyimg//rules:defs.bzl", "py_layer")\n'
                f'py_layer(name = "layer", deps = ["@pypi//:all"], platform = "linux/amd64", '
                f'bytecode = {bytecode}, mtime = {i + 1})\n')
            pyimg_times.append(_run([*PYIMG, "build", *flags, "//:layer"], ws))
            target = scratch / f"pip-target-{bytecode}-{i}"
            pip_times.append(_run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                                   "--no-index", "--disable-pip-version-check", pip_flag,
                                   "--target", str(target), *map(str, wheels)], scratch))
        rows.append((f"py_layer of 50 wheels (2,050 files), bytecode = {bytecode}, vs pip "
                     f"install --no-deps --no-index {pip_flag} --target",
                     statistics.median(pyimg_times), statistics.median(pip_times)))
    return rows


PARTS: dict[str, Callable[[Path, int], list[tuple[str, float, float]]]] = {
    "python": python_part,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--part", choices=sorted(PARTS), action="append")
    args = parser.parse_args()
    subprocess.run([str(REPO / ".venv/bin/python"), "-m", "compileall", "-q",
                    str(REPO / "engine")], check=True)
    print("| measurement | pyimg (median) | reference (median) | ratio |")
    print("| --- | --- | --- | --- |")
    for part in args.part or sorted(PARTS):
        with tempfile.TemporaryDirectory(prefix=f"pyimg-bench-{part}-") as tmp:
            for what, ours, theirs in PARTS[part](Path(tmp), args.runs):
                print(f"| {what} | {ours:.2f} s | {theirs:.2f} s | {ours / theirs:.2f} |",
                      flush=True)


if __name__ == "__main__":
    main()
