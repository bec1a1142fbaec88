"""Same inputs → same bytes, whatever the jobs count, umask, TZ, paths and source mtimes; and the
golden digests in tests/golden/oci_images.json (refresh: PYIMG_UPDATE_GOLDEN=1)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from oci_workspace import Workspace
from pyimg.core.digest import digest_file
from pyimg.oci.layout import Layout

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "oci_images.json"


def _build(root: Path, compression: str, jobs: int, umask: int, tz: str) -> dict[str, str]:
    old_umask = os.umask(umask)
    old_tz = os.environ.get("TZ")
    os.environ["TZ"] = tz
    time.tzset()
    try:
        ws = Workspace(root)
        ws.write("s/big.bin", bytes(range(256)) * 9000)  # > 2 gzip chunks
        ws.write("s/tool", "#!/bin/sh\n", mode=0o775)
        ws.write("s/ünï.txt", "x")
        for i, name in enumerate(("s/big.bin", "s/tool")):
            os.utime(ws.path(name), (1_000_000 + i * 7777, 2_000_000 + i * 99))
        tar = ws.tar(
            "layer",
            {
                "entries": [
                    {"path": "opt/big.bin", "src": "s/big.bin"},
                    {"path": "usr/bin/tool", "src": "s/tool"},
                    {"path": "usr/share/" + "long-" * 30 + "ünï.txt", "src": "s/ünï.txt"},
                    {"path": "usr/bin/t2", "type": "hardlink", "target": "usr/bin/tool"},
                ],
                "symlinks": {"bin": "usr/bin"},
                "empty_dirs": ["tmp"],
                "remove": ["etc/gone"],
            },
            ["s/big.bin", "s/tool", "s/ünï.txt"],
        )
        desc, blob = ws.layer(tar, compression, jobs=jobs)
        img = ws.image(
            "img",
            [(desc, blob)],
            config={"entrypoint": ["/usr/bin/tool"], "env": {"PATH": "/usr/bin"}},
            annotations={"org.opencontainers.image.title": "golden"},
        )
        layout = Layout(ws.path(img))
        m = layout.manifest(layout.resolve())
        return {
            "tar": str(digest_file(ws.path(tar))[0]),
            "layer": str(m.layers[0].digest),
            "config": str(m.config.digest),
            "manifest": ws.path(img + ".digest").read_text(),
        }
    finally:
        os.umask(old_umask)
        if old_tz is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old_tz
        time.tzset()


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_bytes_do_not_depend_on_conditions(tmp_path: Path, compression: str) -> None:
    a = _build(tmp_path / "a", compression, jobs=1, umask=0o022, tz="UTC")
    b = _build(tmp_path / "some" / "other path", compression, jobs=3, umask=0o077, tz="Asia/Tokyo")
    assert a == b


def test_golden_digests(tmp_path: Path) -> None:
    got = {c: _build(tmp_path / c, c, jobs=2, umask=0o022, tz="UTC") for c in ("gzip", "zstd")}
    if os.environ.get("PYIMG_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    expected = json.loads(GOLDEN.read_text())
    # A change here changes every user's image digests: bump OUTPUT_FORMAT_VERSION with it.
    assert got == expected
