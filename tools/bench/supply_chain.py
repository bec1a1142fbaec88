#!/usr/bin/env python3
"""Supply-chain benchmark (docs/benchmarks.md, "Supply chain"): the time `pyimg sbom` and
`pyimg provenance` take for an image of 10,000 files, against that image's cold build, in the
same run. Goal: together they add at most 20% to a cold build.

Each command stands for `pyimg build` of the same patterns and flags: with nothing changed
since that build (its no-op record says so, attest/built.py), it takes the build from the record
instead of checking it again (measured alone as a build without the no-op fast path: what the
commands paid before). Two ratios over the cold build: the commands whole (the goal), and the
commands had each checked the build as before.

    .venv/bin/python tools/bench/supply_chain.py [--files 10000] [--size-mb 100] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYIMG = [str(REPO / ".venv/bin/python"), "-m", "pyimg.cli.main"]

BUILD = """\
load("@pyimg//rules:defs.bzl", "oci_image", "pkg_tar")

pkg_tar(name = "files", srcs = glob(["tree/**"]), strip_prefix = ".", package_dir = "/data")

oci_image(name = "image", tars = [":files"])
"""


def make_workspace(root: Path, files: int, total: int, seed: int = 7) -> None:
    """`files` files of `total` bytes together (half random, half text) in 100 directories."""
    rng = random.Random(seed)
    root.mkdir(parents=True)
    (root / "MODULE.pyimg").write_text("")
    (root / "BUILD.pyimg").write_text(BUILD)
    per_file = max(total // files, 1)
    for i in range(files):
        d = root / "tree" / f"d{i % 100:02d}"
        d.mkdir(parents=True, exist_ok=True)
        data = os.urandom(per_file) if i % 2 else bytes(rng.choices(b"abcdefgh \n", k=per_file))
        (d / f"f{i:05d}").write_bytes(data)


CPU: dict[str, list[float]] = {}  # CPU seconds (user + system) of each measurement's runs


def run(args: list[str], cwd: Path, cache: Path, env: dict[str, str] | None = None,
        name: str = "") -> float:
    """Wall seconds of one command; its CPU seconds go to CPU[name] (steadier on a shared
    machine: other work stretches wall time, not the command's own CPU time)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    subprocess.run([*PYIMG, args[0], "--disk-cache", str(cache), *args[1:]], cwd=cwd,
                   check=True, capture_output=True, env={**os.environ, **(env or {})})
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.setdefault(name or args[0], []).append(
        after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=10_000)
    p.add_argument("--size-mb", type=int, default=100)
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "ws"
        make_workspace(ws, a.files, a.size_mb << 20)
        cold, check, sbom, prov = [], [], [], []
        for n in range(a.runs):
            cache = Path(tmp) / f"cache{n}"
            shutil.rmtree(ws / "pyimg-out", ignore_errors=True)
            cold.append(run(["build", "//:image"], ws, cache, name="cold"))
            # What each command pays to check the build before writing (no no-op fast path).
            check.append(run(["build", "//:image"], ws, cache, {"PYIMG_FAST_NOOP": "0"},
                             name="check"))
            sbom.append(run(["sbom", "//:image", "-o", str(Path(tmp) / "sbom.json")], ws, cache))
            prov.append(run(["provenance", "//:image", "-o", str(Path(tmp) / "prov.json")], ws,
                            cache))
        doc = json.loads((Path(tmp) / "sbom.json").read_text())
        c, s, v = statistics.median(cold), statistics.median(sbom), statistics.median(prov)
        k = statistics.median(check)
        print(f"image: {a.files} files, {a.size_mb} MiB; SBOM lists {len(doc['files'])} files "
              f"({(Path(tmp) / 'sbom.json').stat().st_size >> 10} KiB); median of {a.runs} runs")
        print(f"cold build          {c:7.2f} s")
        print(f"pyimg sbom          {s:7.2f} s")
        print(f"pyimg provenance    {v:7.2f} s")
        print(f"checked build       {k:7.2f} s  (a build with nothing to do, no fast path)")
        print(f"(sbom + provenance) / cold build = {(s + v) / c:.2f}  (the two commands whole; "
              "goal <= 0.20)")
        print(f"(sbom + provenance + 2 checked builds) / cold build = {(s + v + 2 * k) / c:.2f}  "
              "(had each checked the build)")
        cpu = {name: statistics.median(values) for name, values in CPU.items()}
        print("CPU seconds (user + system, median): " + ", ".join(
            f"{name} {value:.2f}" for name, value in cpu.items()))
        print(f"CPU: (sbom + provenance) / cold build = "
              f"{(cpu['sbom'] + cpu['provenance']) / cpu['cold']:.2f}; had each checked the "
              f"build {(cpu['sbom'] + cpu['provenance'] + 2 * cpu['check']) / cpu['cold']:.2f}")


if __name__ == "__main__":
    main()
