"""`pyimg audit` of a workspace whose images hold a py_layer (pip_lock) and an npm_layer
(npm_lock), both served on loopback: every perturbation of the audit (path, umask, TZ, locale,
mtimes, jobs, order, a cold repository cache) gives the same image digests."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from workspace_helpers import Workspace

sys.path.insert(0, str(Path(__file__).parents[1]))
from npm_fixtures import Registry, serve, write_project  # noqa: E402
from python_fixtures import Wheel, make_wheel, publish_index, serve_index, sha256_file  # noqa: E402

pytestmark = pytest.mark.slow


def _wheels(out: Path) -> list[Path]:
    return [
        make_wheel(out, Wheel(
            "svc", "1.0", console_scripts={"svc": "svc:main"}, requires=("util>=1",),
            files={"svc/__init__.py": b"def main():\n    print('svc')\n",
                   "svc/data/table.txt": b"a\nb\n"})),
        make_wheel(out, Wheel("util", "2.1", files={"util/__init__.py": b"X = 1\n"})),
    ]


def test_audit_of_python_and_node_images_is_reproducible(tmp_path: Path) -> None:
    wheels = _wheels(tmp_path / "dist")
    publish_index(tmp_path / "www", wheels)
    with serve_index(tmp_path / "www") as index, serve(Registry()) as registry:
        ws = Workspace(tmp_path / "ws", tmp_path / "cache")
        ws.write("py/requirements.txt", "".join(
            f"{w.name.split('-')[0]}=={w.name.split('-')[1]} --hash=sha256:{sha256_file(w)}\n"
            for w in wheels))
        write_project(ws.root / "web", registry)
        ws.write("MODULE.pyimg", f"""
            pip_lock(name = "pypi", requirements = "py/requirements.txt",
                     python_version = "3.11", index_url = "{index.url}/simple")
            npm_lock(name = "npm", lock = "web/package-lock.json")
            """)
        ws.write("py/BUILD.pyimg", """
            load("@pyimg//rules:defs.bzl", "py_layer")

            py_layer(name = "site", deps = ["@pypi//svc"], platform = "linux/amd64",
                     bytecode = True)
            oci_image(name = "image", tars = [":site"], architecture = "amd64",
                      entrypoint = ["/usr/local/bin/svc"])
            """)
        ws.write("web/BUILD.pyimg", """
            load("@pyimg//rules:defs.bzl", "npm_layer")

            npm_layer(name = "modules", lock = "@npm//:lock", path = "/app/node_modules",
                      platform = "linux/amd64")
            oci_image(name = "image", tars = [":modules"], architecture = "amd64")
            """)
        r = ws.run("lock", "--disk-cache", str(ws.cache))
        assert r.code == 0, r.err
        report = tmp_path / "audit.json"
        r = ws.run("audit", "//py:image", "//web:image", "--report", str(report))
        assert r.code == 0, r.out + r.err
        assert "identical across 2 runs: reproducible" in r.out
        data = json.loads(report.read_text())
        assert data["reproducible"] is True and data["differences"] == []
        assert len(data["outputs"]) == 2 and all(o["identical"] for o in data["outputs"])
        # Each run filled its own repository cache from the loopback servers.
        assert sum(p.startswith("/files/svc-") for p in index.requests) >= 3
