#!/usr/bin/env python3
"""Debian benchmark (docs/benchmarks.md, "Debian bases"): a cold build of examples/debian-python's
image for this machine's platform (amd64 here) from the repository cache, against `tar` of the same unpacked tree piped into
`gzip -6`, measured in the same run; and `pyimg lock` against the unchanged archive.

    .venv/bin/python tools/bench/debian.py [--runs 3] [--cache DIR]

The pinned `.deb`s are fetched once (the network is needed for that, untimed; `--cache DIR`
keeps them for the next run); `pyimg fetch` also decodes each into the repository cache. Each
cold build then starts from a repository cache that holds those `.deb`s, decoded, and nothing
else (no action cache, no output base): nothing is downloaded, and every action runs. Goal: the cold build within 0.7 of `tar | gzip -6`'s time.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "debian-python"
PYIMG = [str(REPO / ".venv/bin/python"), "-m", "pyimg.cli.main"]


CPU = [0.0]  # CPU seconds (user + system) of the last timed command and its children


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str] | str, cwd: Path, shell: bool = False) -> tuple[float, str]:
    """Wall seconds and stderr of `cmd`; its CPU seconds are left in CPU[0]."""
    subprocess.run(["sync"], check=True)  # the writes of the last step do not land in this one
    c0 = _children_cpu()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, shell=shell, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    CPU[0] = _children_cpu() - c0
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{proc.stderr[-3000:]}")
    return elapsed, proc.stderr


def fresh_cache(debs_only: Path, dest: Path) -> Path:
    """A repository cache as `pyimg fetch` leaves it: the fetched `.deb`s and their decoded
    entries (oci/deb.py), hard-linked; no action cache."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for part in ("cas", "debs"):
        if (debs_only / part).is_dir():
            subprocess.run(["cp", "-al", str(debs_only / part), str(dest / part)], check=True)
    return dest


def action_seconds(stderr: str, pattern: str) -> float:
    return sum(float(m) for m in re.findall(rf"^\[\d+/\d+\] {pattern}.* \((\d+\.\d+)s\)$", stderr, re.M))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cache", type=Path, help="keep the fetched .debs here between runs")
    args = ap.parse_args()
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "engine")],
                   check=True, stdout=subprocess.DEVNULL)
    with tempfile.TemporaryDirectory(prefix="pyimg-bench-debian-") as tmp_text:
        tmp = Path(tmp_text)
        ws = tmp / "ws"
        shutil.copytree(EXAMPLE, ws, ignore=shutil.ignore_patterns("pyimg-out"))
        with open(ws / "BUILD.pyimg", "a") as build:  # the same image, its layer in zstd
            build.write('\noci_image(name = "python_zstd", tars = [":base"], '
                        'compression = "zstd")\n')
        debs = args.cache or tmp / "debs"
        print(f"fetching the pinned .debs into {debs} (untimed)", file=sys.stderr)
        subprocess.run([*PYIMG, "fetch", "--disk-cache", str(debs)], cwd=ws, check=True)
        n_debs = len((ws / "pyimg.lock").read_text().split('"sha256"')) - 1

        # The reference's input: the tree the base layer holds, unpacked once.
        ref_cache = fresh_cache(debs, tmp / "ref-cache")
        subprocess.run([*PYIMG, "build", "--disk-cache", str(ref_cache), "--offline",
                        "//:base"], cwd=ws, check=True, capture_output=True)
        tree = tmp / "tree"
        tree.mkdir()
        subprocess.run(["tar", "-xf", str(ws / "pyimg-out/base.tar"), "-C", str(tree)],
                       check=True)
        tree_bytes = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file() and not p.is_symlink())
        shutil.rmtree(ws / "pyimg-out")

        load_before = os.getloadavg()[0]
        pyimg_times, layer_times, ref_times, zstd_times = [], [], [], []
        pyimg_cpu, ref_cpu = [], []
        for i in range(args.runs):  # interleaved, so that the machine's load hits all alike
            cache = fresh_cache(debs, tmp / f"cold-{i}")
            t, err = timed([*PYIMG, "build", "--disk-cache", str(cache), "--offline",
                            "//:python_image"], ws)
            pyimg_times.append(t)
            pyimg_cpu.append(CPU[0])
            layer_times.append(action_seconds(err, "Writing layer"))
            shutil.rmtree(ws / "pyimg-out")
            shutil.rmtree(cache)
            t, _ = timed(f"tar --sort=name -C {tree} -cf - . | gzip -6 > {tmp}/ref.tar.gz", tmp,
                         shell=True)
            ref_times.append(t)
            ref_cpu.append(CPU[0])
            cache = fresh_cache(debs, tmp / f"zstd-{i}")
            t, _ = timed([*PYIMG, "build", "--disk-cache", str(cache), "--offline",
                          "//:python_zstd"], ws)
            zstd_times.append(t)
            shutil.rmtree(ws / "pyimg-out")
            shutil.rmtree(cache)

        load_after = os.getloadavg()[0]
        lock_cache = fresh_cache(debs, tmp / "lock-cache")
        noop_lock = [timed([*PYIMG, "lock", "--disk-cache", str(lock_cache)], ws)[0]
                     for _ in range(args.runs)]
        committed = (ws / "pyimg.lock").read_text()
        update_lock = [timed([*PYIMG, "lock", "--disk-cache", str(lock_cache), "--update",
                              "debian"], ws)[0] for _ in range(args.runs)]
        moved = (ws / "pyimg.lock").read_text() != committed

    med = statistics.median
    cores = os.cpu_count()
    print(f"examples/debian-python amd64 base: {n_debs // 2} .debs per architecture, "
          f"{tree_bytes / 1e6:.0f} MB unpacked; {cores} cores, {args.runs} runs, medians; "
          f"load average {load_before:.1f} before the builds, {load_after:.1f} after")
    print(f"cold build from the repository cache (pyimg build //:python_image): {med(pyimg_times):.2f} s"
          f"  (the layer action alone: {med(layer_times):.2f} s; CPU {med(pyimg_cpu):.2f} s)")
    print(f"tar --sort=name | gzip -6 of the unpacked tree:                   {med(ref_times):.2f} s"
          f"  (CPU {med(ref_cpu):.2f} s)")
    print("each pair (pyimg / reference, wall s): "
          + ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(pyimg_times, ref_times, strict=True)))
    print(f"ratio: {med(pyimg_times) / med(ref_times):.2f} (goal <= 0.7); layer action alone: "
          f"{med(layer_times) / med(ref_times):.2f}")
    print(f"the same image with a zstd layer (compression = \"zstd\"): {med(zstd_times):.2f} s, "
          f"ratio {med(zstd_times) / med(ref_times):.2f}")
    print(f"no-op `pyimg lock` (the lock covers the declaration): {med(noop_lock):.2f} s")
    print(f"`pyimg lock --update debian` against the unchanged archive: {med(update_lock):.2f} s"
          + ("  (NOTE: the archive moved since the lock was committed)" if moved else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
