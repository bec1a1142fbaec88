#!/usr/bin/env python3
"""Lock-file benchmarks (docs/benchmarks.md, "Lock files"): a layer of dependencies from the
repository cache against the ecosystem's own installer from its warm cache, in the same run.

    .venv/bin/python tools/bench/lockfiles.py [--runs 5] [--packages 300] [--part node|python]

Python: a cold `py_layer` of 50 generated wheels from the repository cache against `pip install
--no-deps --no-index --target` of the same wheels, with and without bytecode. Goal <= 0.5.

Node: `npm_layer` of a generated package-lock.json (the tarballs already in pyimg's repository
cache, the action itself cold: each run changes the rule's `mtime`, so the key is new and the
whole layer is written) against `npm ci --offline --ignore-scripts --omit=dev` of the same lock
from a warm npm cache (node_modules removed before each run). Both commands are timed whole,
start-up included. Goal: pyimg's median at most 0.5 of npm's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests"))
from npm_fixtures import Installed, Pkg, Registry, lock_json, package_json, serve  # noqa: E402

PYIMG = [str(REPO / ".venv/bin/pyimg")]


def _timed(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}\n{proc.stdout}")
    return elapsed


def node_tree(count: int, seed: int = 14) -> tuple[dict[str, str], list[Installed]]:
    """`count` packages of 10 to 30 small JS files each (2 to 8 KiB of text), one in ten with a
    bin, one in eight scoped; the first third are the root's dependencies, each later one a
    dependency of an earlier one, and a tenth of them also nested at a second version."""
    rng = random.Random(seed)
    pkgs: list[Pkg] = []
    for i in range(count):
        name = f"@scope{i % 5}/pkg{i}" if i % 8 == 0 else f"pkg{i}"
        files = {}
        for k in range(rng.randint(10, 30)):
            body = "".join(f"exports.f{n} = (x) => x * {n} + {k};\n"
                           for n in range(rng.randint(60, 240)))
            files[f"lib/m{k}.js"] = body
        files["index.js"] = "module.exports = require('./lib/m0.js');\n"
        pkgs.append(Pkg(name, "1.0.0", files, bin={f"cli{i}": "index.js"} if i % 10 == 0 else {}))
    third = max(1, count // 3)
    for i in range(third, count):
        parent = pkgs[rng.randrange(0, i)]
        parent.dependencies[pkgs[i].name] = "1.0.0"
    tree = [Installed(f"node_modules/{p.name}", p) for p in pkgs]
    for i in range(third, count, 10):
        p = pkgs[i]
        nested = Pkg(p.name, "2.0.0", dict(p.files), dict(p.bin))
        holder = next(q for q in pkgs if p.name in q.dependencies)
        holder.dependencies[p.name] = "2.0.0"
        tree.append(Installed(f"node_modules/{holder.name}/node_modules/{p.name}", nested))
    return {p.name: "1.0.0" for p in pkgs[:third]}, tree


def bench_node(runs: int, packages: int) -> list[tuple[str, str, str]]:
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit("npm is not installed (tools/setup --system)")
    with tempfile.TemporaryDirectory(prefix="pyimg-bench-lock-") as tmp, serve(Registry()) as reg:
        root = Path(tmp)
        deps, tree = node_tree(packages)
        web = root / "ws" / "web"
        web.mkdir(parents=True)
        (web / "package.json").write_text(json.dumps(package_json("web", deps, {}, {})))
        (web / "package-lock.json").write_text(
            json.dumps(lock_json("web", deps, {}, {}, tree, reg), indent=2))
        (root / "ws/MODULE.pyimg").write_text(
            'npm_lock(name = "npm", lock = "web/package-lock.json")\n')
        cache = root / "cache"
        ws = root / "ws"
        _timed([*PYIMG, "lock", "--disk-cache", str(cache)], ws)
        _timed([*PYIMG, "fetch", "--disk-cache", str(cache)], ws)
        npm_dir = root / "npm"
        shutil.copytree(web, npm_dir)
        npm_cache = root / "npm-cache"
        env = {**os.environ, "npm_config_update_notifier": "false"}
        npm_cmd = [npm, "ci", "--ignore-scripts", "--omit=dev", "--no-audit", "--no-fund",
                   "--cache", str(npm_cache), "--registry", reg.url]
        _timed(npm_cmd, npm_dir, env)  # warms npm's cache from the loopback registry
        files = sum(1 for _ in (npm_dir / "node_modules").rglob("*"))
        ours, theirs = [], []
        for run in range(runs):
            (web / "BUILD.pyimg").write_text(
                'load("@pyimg//rules:defs.bzl", "npm_layer")\n'
                f'npm_layer(name = "modules", lock = "@npm//:lock", mtime = {run + 1})\n')
            ours.append(_timed([*PYIMG, "build", "--disk-cache", str(cache), "//web:modules"], ws))
            shutil.rmtree(npm_dir / "node_modules")
            theirs.append(_timed([*npm_cmd, "--offline"], npm_dir, env))
    a, b = statistics.median(ours), statistics.median(theirs)
    what = f"{packages + len(range(packages // 3, packages, 10))} packages, {files} paths"
    return [
        (f"node_modules layer, cold action, warm repository cache ({what})", f"{a:.2f}s", ""),
        ("npm ci --offline --ignore-scripts --omit=dev, warm npm cache", f"{b:.2f}s", ""),
        ("ratio pyimg / npm (goal <= 0.5)", f"{a / b:.2f}", "met" if a / b <= 0.5 else "NOT met"),
    ]


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
    _timed([*PYIMG, "lock", *flags], ws)
    _timed([*PYIMG, "fetch", *flags], ws)
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
            pyimg_times.append(_timed([*PYIMG, "build", *flags, "//:layer"], ws))
            target = scratch / f"pip-target-{bytecode}-{i}"
            pip_times.append(_timed([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                                   "--no-index", "--disable-pip-version-check", pip_flag,
                                   "--target", str(target), *map(str, wheels)], scratch))
        rows.append((f"py_layer of 50 wheels (2,050 files), bytecode = {bytecode}, vs pip "
                     f"install --no-deps --no-index {pip_flag} --target",
                     statistics.median(pyimg_times), statistics.median(pip_times)))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--packages", type=int, default=300)
    ap.add_argument("--part", choices=["node", "python"], action="append")
    args = ap.parse_args()
    parts = args.part or ["node", "python"]
    if "node" in parts:
        for row in bench_node(args.runs, args.packages):
            print(" | ".join(x for x in row if x))
    if "python" in parts:
        print("| measurement | pyimg (median) | reference (median) | ratio |")
        print("| --- | --- | --- | --- |")
        with tempfile.TemporaryDirectory(prefix="pyimg-bench-python-") as tmp:
            for what, ours, theirs in python_part(Path(tmp), args.runs):
                print(f"| {what} | {ours:.2f} s | {theirs:.2f} s | {ours / theirs:.2f} |",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
