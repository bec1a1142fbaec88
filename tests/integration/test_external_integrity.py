"""http_file and http_archive pinned by `integrity` (SRI sha512/sha384/sha256): verified,
refused naming the declaration and both digests, cached under sha256 through the SRI index,
--offline from that cache."""

from __future__ import annotations

import base64
import hashlib
import sys
from pathlib import Path

import pytest
from workspace_helpers import Workspace

sys.path.insert(0, str(Path(__file__).parents[1]))
from npm_fixtures import Registry, serve  # noqa: E402

pytestmark = pytest.mark.slow


def _sri(algorithm: str, data: bytes) -> str:
    return f"{algorithm}-" + base64.b64encode(hashlib.new(algorithm, data).digest()).decode()


def _workspace(ws: Workspace, url: str, pin: str) -> None:
    ws.write("MODULE.pyimg", f"""
        http_file(
            name = "tool",
            urls = ["{url}"],
            integrity = "{pin}",
            executable = True,
        )
        """)
    ws.write("app/BUILD.pyimg", 'pkg_tar(name = "layer", srcs = ["@tool//file"], '
                                'package_dir = "/bin")\n')


@pytest.mark.parametrize("algorithm", ["sha512", "sha384", "sha256"])
def test_integrity_pins_http_file(tmp_path: Path, algorithm: str) -> None:
    data = b"#!/bin/sh\necho hi\n"
    with serve(Registry()) as reg:
        reg.files["/tool.sh"] = data
        ws = Workspace(tmp_path / "ws", tmp_path / "cache")
        _workspace(ws, f"{reg.url}/tool.sh", _sri(algorithm, data))
        r = ws.run("build", "//app:layer")
        assert r.code == 0, r.err
        assert reg.requests == ["/tool.sh"]
        # Stored under its sha256; a sha512/384 pin finds it through the SRI index.
        sha256 = hashlib.sha256(data).hexdigest()
        assert list((ws.cache / "cas").rglob(sha256 + "*"))
        if algorithm != "sha256":
            index = ws.cache / "sri" / algorithm / hashlib.new(algorithm, data).hexdigest()
            assert index.read_text() == sha256
        ws2 = Workspace(tmp_path / "ws2", tmp_path / "cache")
        _workspace(ws2, f"{reg.url}/tool.sh", _sri(algorithm, data))
        r = ws2.run("build", "--offline", "//app:layer")
        assert r.code == 0, r.err
        assert reg.requests == ["/tool.sh"]


def test_bad_integrity_refused(tmp_path: Path) -> None:
    with serve(Registry()) as reg:
        reg.files["/tool.sh"] = b"evil"
        ws = Workspace(tmp_path / "ws", tmp_path / "cache")
        pin = _sri("sha512", b"good")
        _workspace(ws, f"{reg.url}/tool.sh", pin)
        r = ws.run("build", "//app:layer")
        assert r.code == 1
        assert "MODULE.pyimg:2:1" in r.err and "http_file 'tool'" in r.err, r.err
        assert pin in r.err and _sri("sha512", b"evil") in r.err
        assert not (ws.cache / "sri").exists()


def test_integrity_declaration_errors(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    for pin, message in (("md5-abc", "not an integrity string"),
                         ("sha512-AAAA", "has 64 bytes"),
                         ("sha512-!!", "not valid base64")):
        _workspace(ws, "http://127.0.0.1:9/x", pin)
        r = ws.run("build", "//app:layer")
        assert r.code == 2 and "MODULE.pyimg:2:1" in r.err and message in r.err, (pin, r.err)
    ws.write("MODULE.pyimg", f'http_file(name = "tool", urls = ["http://127.0.0.1:9/x"], '
                             f'sha256 = "{"0" * 64}", integrity = "{_sri("sha512", b"")}")\n')
    r = ws.run("build", "//app:layer")
    assert r.code == 2 and "not both" in r.err, r.err
