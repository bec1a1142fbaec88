#!/usr/bin/env python3
"""Registry requests and round-trips a signature adds to a push (docs/benchmarks.md, "Supply
chain"): the same small image pushed by `pyimg run` of an oci_push, once plain and once with
`sign_key`, through a loopback proxy in front of a local docker-registry that counts every
request and adds LATENCY seconds to each answer, as a distant registry would.

    .venv/bin/python tools/bench/signing_requests.py [--latency 0.2]

Round-trips are the sequential rounds: the longest chain of requests each sent after the
previous one was answered (requests a client sends together overlap, and count once). With a
latency well above the machine's scheduling delays they do not depend on the machine; the
request counts never do. The tests call `signing_requests()` too.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration" / "registry"))
from regtestlib import FaultProxy, start_registry  # noqa: E402

PYIMG = str(REPO / ".venv" / "bin" / "pyimg")
PASSWORD = "bench password"


def _workspace(root: Path, host: str, repo: str, sign: bool) -> Path:
    root.mkdir(parents=True)
    (root / "MODULE.pyimg").write_text("")
    (root / "app").mkdir()
    (root / "app" / "hello.txt").write_text("hello\n")
    signing = 'sign_key = "env://BENCH_KEY", sign_key_password_env = "BENCH_PW",' if sign else ""
    (root / "app" / "BUILD.pyimg").write_text(textwrap.dedent(f"""
        pkg_tar(name = "layer", srcs = ["hello.txt"], package_dir = "/app")
        oci_image(name = "image", tars = [":layer"], entrypoint = ["/bin/true"])
        oci_push(name = "push", image = ":image", repository = "{host}/{repo}",
                 remote_tags = ["v1"], {signing})
    """))
    return root


def signing_requests(registry_host: str, workdir: Path, latency: float = 0.2,
                     namespace: str = "bench") -> dict[str, object]:
    """Push one image plainly and one signed through a counting proxy, to repositories under
    `namespace` (a fresh one measures a first signature); returns the requests and round-trips
    of each push, the differences, and the added requests by method."""
    proxy = FaultProxy(registry_host, latency)
    env = dict(os.environ)
    env.pop("DOCKER_CONFIG", None)
    try:
        keys = workdir / "bench"
        env["BENCH_PW"] = PASSWORD
        subprocess.run([PYIMG, "keygen", str(keys), "--key-password-env", "BENCH_PW"],
                       check=True, capture_output=True, env=env)
        env["BENCH_KEY"] = keys.with_suffix(".key").read_text()
        cache = workdir / "cache"
        counts: dict[str, list[str]] = {}
        rounds: dict[str, int] = {}
        for name, sign in (("plain", False), ("signed", True)):
            ws = _workspace(workdir / name, proxy.host, f"{namespace}/{name}", sign)
            before = len(proxy.requests)
            subprocess.run([PYIMG, "run", "--disk-cache", str(cache), "//app:push"], cwd=ws,
                           check=True, capture_output=True, env=env)
            counts[name] = proxy.requests[before:]
            rounds[name] = proxy.round_trips(before)
    finally:
        proxy.close()
    added = collections.Counter(r.split(" ")[0] for r in counts["signed"])
    added.subtract(collections.Counter(r.split(" ")[0] for r in counts["plain"]))
    return {
        "push": len(counts["plain"]),
        "signed_push": len(counts["signed"]),
        "added": len(counts["signed"]) - len(counts["plain"]),
        "artifacts": 4,  # the .sig tag manifest, the Sigstore bundle, the SBOM and provenance
        "added_by_method": {k: v for k, v in sorted(added.items()) if v},
        "push_round_trips": rounds["plain"],
        "signed_push_round_trips": rounds["signed"],
        "added_round_trips": rounds["signed"] - rounds["plain"],
        "latency": latency,
    }


def main() -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--latency", type=float, default=0.2, help="seconds added to each answer")
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="pyimg-bench-sign-") as tmp:
        reg = start_registry(Path(tmp) / "registry")
        try:
            result = signing_requests(reg.host, Path(tmp), a.latency)
        finally:
            reg.stop()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
