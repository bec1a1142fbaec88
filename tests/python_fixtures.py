"""Test fixtures for Python packages: small wheels made here (pure, with console scripts, with
.data, platform-specific, abi3), sdists, and a PEP 503 / PEP 691 simple index served on loopback."""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import tarfile
import threading
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["IndexServer", "Wheel", "make_sdist", "make_wheel", "publish_index", "serve_index",
           "sha256_file"]


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Wheel:
    """A wheel to build: its project, version, tag, files and metadata."""

    name: str
    version: str = "1.0"
    tag: str = "py3-none-any"
    files: Mapping[str, bytes] = field(default_factory=dict)  # path in the wheel -> content
    requires: tuple[str, ...] = ()  # Requires-Dist lines
    extras: tuple[str, ...] = ()  # Provides-Extra
    console_scripts: Mapping[str, str] = field(default_factory=dict)  # name -> "mod:func"
    executable: tuple[str, ...] = ()  # paths in the wheel with the exec bit
    metadata: tuple[str, ...] = ()  # further METADATA lines ("License-Expression: MIT")

    @property
    def dist(self) -> str:
        return self.name.replace("-", "_")

    @property
    def filename(self) -> str:
        return f"{self.dist}-{self.version}-{self.tag}.whl"


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(out_dir: Path, wheel: Wheel) -> Path:
    """Build the wheel in `out_dir` (fixed zip timestamps: the same bytes every time)."""
    files = dict(wheel.files) or {f"{wheel.dist}/__init__.py": f"NAME = {wheel.name!r}\n".encode()}
    info = f"{wheel.dist}-{wheel.version}.dist-info"
    metadata = ["Metadata-Version: 2.1", f"Name: {wheel.name}", f"Version: {wheel.version}"]
    metadata += [f"Provides-Extra: {e}" for e in wheel.extras]
    metadata += [f"Requires-Dist: {r}" for r in wheel.requires]
    metadata += list(wheel.metadata)
    pure = "true" if wheel.tag.endswith("-none-any") else "false"
    files[f"{info}/METADATA"] = ("\n".join(metadata) + "\n\n").encode()
    files[f"{info}/WHEEL"] = (f"Wheel-Version: 1.0\nGenerator: pyimg-tests\nRoot-Is-Purelib: {pure}\n"
                              f"Tag: {wheel.tag}\n").encode()
    if wheel.console_scripts:
        lines = ["[console_scripts]"] + [f"{k} = {v}" for k, v in wheel.console_scripts.items()]
        files[f"{info}/entry_points.txt"] = ("\n".join(lines) + "\n").encode()
    record = "".join(f"{p},{_record_hash(d)},{len(d)}\n" for p, d in files.items())
    files[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / wheel.filename
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for p, d in files.items():
            zi = zipfile.ZipInfo(p, date_time=(2020, 1, 1, 0, 0, 0))
            zi.external_attr = (0o100000 | (0o755 if p in wheel.executable else 0o644)) << 16
            z.writestr(zi, d)
    return path


def make_sdist(out_dir: Path, name: str, version: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}-{version}.tar.gz"
    with tarfile.open(path, "w:gz") as t:
        data = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()
        info = tarfile.TarInfo(f"{name}-{version}/PKG-INFO")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return path


def publish_index(root: Path, files: list[Path], base_url: str = "") -> None:
    """Write `root/simple/<project>/index.html` (PEP 503, hashes in the URL fragment) and
    `index.json` (PEP 691) for `files`, which are copied to `root/files/`."""
    from packaging.utils import canonicalize_name

    by_project: dict[str, list[Path]] = {}
    (root / "files").mkdir(parents=True, exist_ok=True)
    for f in files:
        project = canonicalize_name(f.name.split("-", 1)[0])
        by_project.setdefault(project, []).append(f)
        (root / "files" / f.name).write_bytes(f.read_bytes())
    for project, project_files in by_project.items():
        page = root / "simple" / project
        page.mkdir(parents=True, exist_ok=True)
        links = "".join(
            f'<a href="../../files/{f.name}#sha256={sha256_file(f)}">{f.name}</a><br/>\n'
            for f in sorted(project_files))
        (page / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")
        doc = {"meta": {"api-version": "1.0"}, "name": project, "files": [
            {"filename": f.name, "url": f"../../files/{f.name}",
             "hashes": {"sha256": sha256_file(f)}} for f in sorted(project_files)]}
        (page / "index.json").write_text(json.dumps(doc))


class IndexServer:
    """Serves a published index on loopback: JSON (PEP 691) to a client that asks for it, unless
    `html_only`; `requests` lists the paths asked for; `auth` requires basic credentials."""

    def __init__(self, root: Path, html_only: bool = False, auth: str | None = None) -> None:
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: object, **kwargs: object) -> None:
                super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

            def do_GET(self) -> None:  # noqa: N802
                server.requests.append(self.path)
                if auth is not None:
                    want = "Basic " + base64.b64encode(auth.encode()).decode()
                    if self.headers.get("Authorization") != want:
                        self.send_response(401)
                        self.send_header("WWW-Authenticate", 'Basic realm="index"')
                        self.end_headers()
                        return
                if self.path.startswith("/simple/") and self.path.endswith("/"):
                    json_wanted = "application/vnd.pypi.simple.v1+json" in (
                        self.headers.get("Accept") or "")
                    page = root / self.path.lstrip("/")
                    if not page.is_dir():
                        self.send_error(404)
                        return
                    use_json = json_wanted and not html_only
                    body = (page / ("index.json" if use_json else "index.html")).read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/vnd.pypi.simple.v1+json"
                                     if use_json else "text/html")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                super().do_GET()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.requests: list[str] = []
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@contextmanager
def serve_index(root: Path, html_only: bool = False,
                auth: str | None = None) -> Iterator[IndexServer]:
    server = IndexServer(root, html_only, auth)
    try:
        yield server
    finally:
        server.close()
