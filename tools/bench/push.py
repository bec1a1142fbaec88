#!/usr/bin/env python3
"""Push benchmark (docs/benchmarks.md, "Push"): pushing a ~500 MB image built by pyimg to a local docker-registry,
against `skopeo copy oci:DIR docker://...` of the same layout, and re-pushing it unchanged.

    .venv/bin/python tools/bench/push.py [--size-mb 500]

Goals: pyimg push / skopeo copy <= 1.0; unchanged re-push <= 0.1 of the first push.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration" / "registry"))
from regtestlib import start_registry  # noqa: E402

PYIMG = [str(REPO / ".venv/bin/python"), "-m", "pyimg.cli.main"]


def timed(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t0


def main() -> int:
    # Measure pyimg, not the byte-compiler (PYTHONDONTWRITEBYTECODE may be set).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(__file__).resolve().parents[2] / "engine")],
                   check=True, stdout=subprocess.DEVNULL)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=500)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pyimg-bench-push-"))
    reg = start_registry(tmp / "registry")
    try:
        ws = tmp / "ws"
        layers = 5
        for i in range(layers):
            d = ws / f"l{i}"
            d.mkdir(parents=True)
            for j in range(10):  # incompressible: the push, not gzip, is measured
                (d / f"f{j}.bin").write_bytes(os.urandom((args.size_mb << 20) // (layers * 10)))
        (ws / "MODULE.pyimg").write_text("")
        tars = ", ".join(f'":l{i}"' for i in range(layers))
        (ws / "BUILD.pyimg").write_text(
            "".join(f'pkg_tar(name = "l{i}", srcs = glob(["l{i}/**"]), strip_prefix = ".")\n'
                    for i in range(layers))
            + f'oci_image(name = "image", tars = [{tars}])\n'
        )
        cache = ["--disk-cache", str(tmp / "cache")]
        subprocess.run([*PYIMG, "build", *cache, "//:image"], cwd=ws, check=True, capture_output=True)
        layout = ws / "pyimg-out" / "image"
        skopeo = timed(["skopeo", "copy", "--dest-tls-verify=false", f"oci:{layout}:latest",
                        f"docker://{reg.host}/bench/skopeo:v1"], ws)
        first = timed([*PYIMG, "push", *cache, "//:image", "--repository",
                       f"{reg.host}/bench/pyimg", "--tag", "v1"], ws)
        again = timed([*PYIMG, "push", *cache, "//:image", "--repository",
                       f"{reg.host}/bench/pyimg", "--tag", "v1"], ws)
        size = sum(p.stat().st_size for p in (layout / "blobs").rglob("*") if p.is_file())
    finally:
        reg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"| measurement ({size / 1e6:.0f} MB image, local registry) | seconds | ratio |")
    print("| --- | --- | --- |")
    print(f"| pyimg push vs skopeo copy | {first:.2f} / {skopeo:.2f} | {first / skopeo:.2f} (goal <= 1.0) |")
    print(f"| unchanged re-push vs first push | {again:.2f} / {first:.2f} | {again / first:.2f} (goal <= 0.1) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
