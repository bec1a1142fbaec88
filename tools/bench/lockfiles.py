#!/usr/bin/env python3
"""Lock-file benchmarks (docs/benchmarks.md, "Lock files"): a layer of dependencies from the
repository cache against the ecosystem's own installer from its warm cache, in the same run.

    .venv/bin/python tools/bench/lockfiles.py [--runs 5] [--packages 300]

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--packages", type=int, default=300)
    args = ap.parse_args()
    for row in bench_node(args.runs, args.packages):
        print(" | ".join(x for x in row if x))
    return 0


if __name__ == "__main__":
    sys.exit(main())
