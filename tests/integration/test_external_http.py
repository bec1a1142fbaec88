"""http_file and http_archive served by a local http.server: pinning, wrong sha256, hostile
archives, the shared repository cache and --offline."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import sys
import tarfile
import threading
from pathlib import Path

import pytest
from workspace_helpers import Workspace

sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "core"))
from test_archive import make_tar  # noqa: E402

pytestmark = pytest.mark.slow


class _Server:
    def __init__(self, root: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.root = root
        self.requests: list[str] = []
        self.httpd.requests = self.requests  # type: ignore[attr-defined]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        self.server.requests.append(self.path)  # type: ignore[attr-defined]


@pytest.fixture
def server(tmp_path: Path):
    root = tmp_path / "www"
    root.mkdir()
    s = _Server(root)
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tool_workspace(ws: Workspace, server: _Server, sha: str) -> None:
    ws.write(
        "MODULE.pyimg",
        f"""
        http_file(
            name = "tool",
            urls = ["{server.url("tool.sh")}"],
            sha256 = "{sha}",
            executable = True,
        )
        """,
    )
    ws.write(
        "app/BUILD.pyimg",
        """
        pkg_tar(name = "layer", srcs = ["@tool//file"], package_dir = "/bin")
        oci_image(name = "image", tars = [":layer"])
        """,
    )


def test_http_file_verified_cached_and_offline(server: _Server, tmp_path: Path) -> None:
    (server.root / "tool.sh").write_text("#!/bin/sh\necho hi\n")
    sha = _sha(server.root / "tool.sh")
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    _tool_workspace(ws, server, sha)
    r = ws.run("build", "//app:image", "//app:layer")
    assert r.code == 0, r.err
    from pyimg.oci.validate import validate_layout

    validate_layout(ws.out("app/image"))
    with tarfile.open(ws.out("app/layer.tar")) as t:
        info = t.getmember("bin/tool.sh")
        assert info.mode & 0o111
    assert server.requests == ["/tool.sh"]

    # A second workspace of the same user downloads nothing, even online.
    ws2 = Workspace(tmp_path / "ws2", tmp_path / "cache")
    _tool_workspace(ws2, server, sha)
    assert ws2.run("build", "//app:image").code == 0
    assert server.requests == ["/tool.sh"]
    # --offline with a warm cache works; with a cold one it names what is missing.
    assert ws2.run("build", "--offline", "//app:image").code == 0
    cold = Workspace(tmp_path / "cold", tmp_path / "cold-cache")
    _tool_workspace(cold, server, sha)
    r = cold.run("build", "--offline", "//app:image")
    assert r.code == 1
    assert "MODULE.pyimg:2" in r.err and "tool.sh" in r.err and "--offline" in r.err


def test_external_targets_as_patterns(server: _Server, tmp_path: Path) -> None:
    (server.root / "tool.sh").write_text("#!/bin/sh\necho hi\n")
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    _tool_workspace(ws, server, _sha(server.root / "tool.sh"))
    assert ws.run("build", "@tool").code == 0
    assert ws.run("build", "@tool//file:all").code == 0
    r = ws.run("query", "deps(@tool)")
    assert r.code == 0, r.err
    assert r.out.split() == ["@tool//:tool", "@tool//file:file", "@tool//file:tool.sh"]
    r = ws.run("query", "rdeps(//..., @tool//file)")
    assert r.out.split() == ["//app:image", "//app:layer", "@tool//file:file"]
    r = ws.run("build", "@tool//...")
    assert r.code == 2 and "'@tool//pkg:all'" in r.err, r.err


def test_http_file_wrong_sha256(server: _Server, tmp_path: Path) -> None:
    (server.root / "tool.sh").write_text("#!/bin/sh\n")
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    _tool_workspace(ws, server, "0" * 64)
    r = ws.run("build", "//app:image")
    assert r.code == 1
    assert (
        "MODULE.pyimg:2" in r.err and _sha(server.root / "tool.sh") in r.err and "0" * 64 in r.err
    )
    assert not list((ws.cache / "cas").rglob(_sha(server.root / "tool.sh") + "*"))


def test_http_file_unpinned_then_lock(server: _Server, tmp_path: Path) -> None:
    (server.root / "tool.sh").write_text("#!/bin/sh\n")
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    ws.write("MODULE.pyimg", f'http_file(name = "tool", urls = ["{server.url("tool.sh")}"])\n')
    ws.write("app/BUILD.pyimg", 'filegroup(name = "f", srcs = ["@tool"])\n')
    r = ws.run("build", "//app:f")
    assert r.code == 2
    assert "MODULE.pyimg:1" in r.err and "http_file 'tool'" in r.err and "pyimg lock" in r.err
    assert ws.run("lock", "--disk-cache", str(ws.cache)).code == 0
    entry = json.loads((ws.root / "pyimg.lock").read_text())["repositories"]["tool"]
    assert entry["sha256"] == _sha(server.root / "tool.sh")
    assert ws.run("build", "//app:f").code == 0


def _archive_workspace(
    ws: Workspace, server: _Server, name: str, sha: str, strip: str = ""
) -> None:
    ws.write(
        "MODULE.pyimg",
        f'''
        http_archive(
            name = "src",
            urls = ["{server.url(name)}"],
            sha256 = "{sha}",
            strip_prefix = "{strip}",
            build_file_content = """
        filegroup(name = "all", srcs = glob(["**"]))
        pkg_tar(name = "tar", srcs = [":all"], package_dir = "/opt", strip_prefix = ".")
        """,
        )
        ''',
    )
    ws.write(
        "app/BUILD.pyimg",
        """
        oci_image(name = "image", tars = ["@src//:tar"])
        filegroup(name = "files", srcs = ["@src//:tar"])
        """,
    )


def test_http_archive_extracts_with_strip_prefix(server: _Server, tmp_path: Path) -> None:
    arc = make_tar(
        server.root / "src.tar.gz",
        [
            ("src-1.0/", "dir", b""),
            ("src-1.0/a.txt", "file", b"A"),
            ("src-1.0/d/b.txt", "file", b"B"),
        ],
    )
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    _archive_workspace(ws, server, "src.tar.gz", _sha(arc), "src-1.0")
    r = ws.run("build", "//app:image", "//app:files")
    assert r.code == 0, r.err
    from pyimg.oci.validate import validate_layout

    validate_layout(ws.out("app/image"))
    tar = ws.out("external/src/tar.tar")
    with tarfile.open(tar) as t:
        names = t.getnames()
    assert any(n.endswith("opt/a.txt") for n in names) and any(
        n.endswith("opt/d/b.txt") for n in names
    )


@pytest.mark.parametrize(
    "members, fragment",
    [
        ([("/etc/passwd", "file", b"x")], "absolute path"),
        ([("../x", "file", b"x")], "'..' path component"),
        ([("l", "sym", "../../outside")], "points outside the archive root"),
        ([("h", "hard", "/etc/passwd")], "absolute path"),
        ([("dev", "dev", b"")], "is a device"),
        ([("a", "file", b"1"), ("a", "file", b"2")], "duplicate entry 'a'"),
    ],
)
def test_hostile_archives_are_refused(server: _Server, tmp_path: Path, members, fragment) -> None:
    arc = make_tar(server.root / "evil.tar.gz", members)
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    _archive_workspace(ws, server, "evil.tar.gz", _sha(arc))
    r = ws.run("build", "//app:image")
    assert r.code == 2, r.err
    assert "MODULE.pyimg:2" in r.err and "evil.tar.gz" in r.err and fragment in r.err


def test_strip_prefix_matching_nothing_is_an_error(server: _Server, tmp_path: Path) -> None:
    arc = make_tar(server.root / "src.tar.gz", [("src-1.0/a.txt", "file", b"A")])
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    _archive_workspace(ws, server, "src.tar.gz", _sha(arc), "src-2.0")
    r = ws.run("build", "//app:image")
    assert r.code == 2
    assert "strip_prefix 'src-2.0' matches no entry" in r.err


def test_zip_archive(server: _Server, tmp_path: Path) -> None:
    import zipfile

    path = server.root / "src.zip"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("top/a.txt", "A")
    path.write_bytes(buf.getvalue())
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    _archive_workspace(ws, server, "src.zip", _sha(path), "top")
    r = ws.run("build", "//app:image")
    assert r.code == 0, r.err


def test_http_archive_zip_bomb_stops_at_the_limit(server: _Server, tmp_path: Path) -> None:
    import zipfile

    path = server.root / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z, z.open("top/zeros", "w") as f:
        for _ in range(32):
            f.write(bytes(1 << 20))
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    _archive_workspace(ws, server, "bomb.zip", _sha(path), "top")
    module = (ws.root / "MODULE.pyimg").read_text()
    ws.write("MODULE.pyimg", module.replace('strip_prefix = "top",', 'strip_prefix = "top", max_unpacked_bytes = 8388608,'))
    r = ws.run("build", "//app:image")
    assert r.code == 2, r.err
    assert "MODULE.pyimg:2" in r.err and "bomb.zip: unpacks to more than 8,388,608 bytes" in r.err
    assert "Traceback" not in r.err
    assert not list((ws.cache).rglob("zeros"))  # nothing half-unpacked is kept
    ws.write("MODULE.pyimg", module.replace('strip_prefix = "top",', 'strip_prefix = "top", max_unpacked_bytes = 67108864,'))
    r = ws.run("build", "//app:image")
    assert r.code == 0, r.err
