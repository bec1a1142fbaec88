"""Helpers for registry integration tests: start docker-registry, build small OCI images."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REGISTRY_BIN = "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningRegistry:
    host: str  # 127.0.0.1:PORT
    root: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_registry(workdir: Path, auth: str = "") -> RunningRegistry:
    """Start docker-registry with filesystem storage under `workdir`; `auth` is a YAML block."""
    if not Path(REGISTRY_BIN).exists():
        pytest.skip("docker-registry is not installed")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = workdir / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        "storage:\n"
        f"  filesystem:\n    rootdirectory: {workdir / 'data'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n" + auth
    )
    log = workdir / "registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [REGISTRY_BIN, "serve", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    reg = RunningRegistry(f"127.0.0.1:{port}", workdir, proc, log)
    deadline = time.monotonic() + 10
    while True:
        try:
            urllib.request.urlopen(f"http://{reg.host}/v2/", timeout=1).close()
            break
        except urllib.error.HTTPError:
            break  # 401 from an auth-enabled registry: it is up
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                reg.stop()
                raise RuntimeError(f"registry did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.05)
    return reg


# -- test images -----------------------------------------------------------------------------


def _gzip_tar(files: dict[str, bytes], executables: frozenset[str] = frozenset()) -> tuple[bytes, str]:
    """A deterministic gzip'd tar; returns (blob, diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mode = 0o755 if name in executables else 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(files[name]))
    tar_bytes = raw.getvalue()
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0, compresslevel=6) as g:
        g.write(tar_bytes)
    return gz.getvalue(), "sha256:" + hashlib.sha256(tar_bytes).hexdigest()


def _put(layout: Path, data: bytes) -> dict:
    hexd = hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / hexd
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": f"sha256:{hexd}", "size": len(data)}


_OCI_TYPES = {
    "manifest": "application/vnd.oci.image.manifest.v1+json",
    "config": "application/vnd.oci.image.config.v1+json",
    "layer": "application/vnd.oci.image.layer.v1.tar+gzip",
}
_DOCKER_TYPES = {
    "manifest": "application/vnd.docker.distribution.manifest.v2+json",
    "config": "application/vnd.docker.container.image.v1+json",
    "layer": "application/vnd.docker.image.rootfs.diff.tar.gzip",
}


def make_image(
    layout: Path,
    tag: str = "v1",
    layers: list[dict[str, bytes]] | None = None,
    arch: str = "amd64",
    write_index: bool = True,
    executables: frozenset[str] = frozenset(),
    docker_types: bool = False,
) -> dict:
    """Write a valid OCI image (gzip layers, config, manifest) into `layout`; returns the
    manifest descriptor (with platform). `executables` are layer paths with mode 0755;
    `docker_types` uses Docker's v2 schema 2 media types instead of OCI's."""
    types = (_DOCKER_TYPES if docker_types else _OCI_TYPES)
    layers = layers or [{"hello.txt": b"hello from pyimg\n"}]
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    layer_descs, diff_ids = [], []
    for files in layers:
        blob, diff_id = _gzip_tar(files, executables)
        layer_descs.append({"mediaType": types["layer"], **_put(layout, blob)})
        diff_ids.append(diff_id)
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "1970-01-01T00:00:00Z"} for _ in layers],
        "created": "1970-01-01T00:00:00Z",
    }
    config_desc = {
        "mediaType": types["config"],
        **_put(layout, json.dumps(config, sort_keys=True).encode()),
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": types["manifest"],
        "config": config_desc,
        "layers": layer_descs,
    }
    desc = {
        "mediaType": types["manifest"],
        **_put(layout, json.dumps(manifest, sort_keys=True).encode()),
        "platform": {"architecture": arch, "os": "linux"},
    }
    if write_index:
        entry = {**desc, "annotations": {"org.opencontainers.image.ref.name": tag}}
        (layout / "index.json").write_text(
            json.dumps({"schemaVersion": 2, "manifests": [entry]}, sort_keys=True)
        )
    return desc


def make_index(layout: Path, tag: str = "multi") -> dict:
    """A two-platform OCI index (amd64, arm64) in `layout`; returns its descriptor."""
    children = [
        make_image(layout, layers=[{"arch": arch.encode()}], arch=arch, write_index=False)
        for arch in ("amd64", "arm64")
    ]
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": children,
    }
    desc = {
        "mediaType": "application/vnd.oci.image.index.v1+json",
        **_put(layout, json.dumps(index, sort_keys=True).encode()),
    }
    entry = {**desc, "annotations": {"org.opencontainers.image.ref.name": tag}}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    return desc


def blob_files(layout: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (layout / "blobs" / "sha256").iterdir()}


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    if not shutil.which("skopeo"):
        pytest.skip("skopeo is not installed")
    env = dict(os.environ)
    proc = subprocess.run(["skopeo", *args], capture_output=True, text=True, env=env, timeout=120)
    if proc.returncode != 0:
        raise AssertionError(f"skopeo {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return proc


def htpasswd_line(user: str, password: str) -> str:
    """A bcrypt htpasswd line. No `htpasswd` binary or `bcrypt` package here; libcrypt's
    blowfish via the stdlib `crypt` module does it (cost 4 keeps the test fast)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    return f"{user}:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))}"


class FaultProxy:
    """A loopback HTTP proxy in front of a registry that injects scripted faults.

    `faults` is a list of (method, path substring, fault); the first match is consumed.
    Faults: "500", "503", "429" (Retry-After: 1), "400" (a refusal, not retried), "drop"
    (close mid-body), "truncate" (a consistent but short body), "corrupt" (one byte flipped).
    `requests` lists every request forwarded or faulted ("METHOD /path", no query); `spans`
    the (start, end) of each on the monotonic clock, for `round_trips`. `latency` seconds are
    added before each answer, as a distant registry would, so that requests a client sends
    together overlap whatever the machine's load.
    """

    def __init__(self, upstream: str, latency: float = 0.0) -> None:
        self.upstream = upstream
        self.latency = latency
        self.faults: list[tuple[str, str, str]] = []
        self.injected: list[str] = []
        self.requests: list[str] = []
        self.spans: list[tuple[float, float]] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _handle(self) -> None:
                start = time.monotonic()
                try:
                    self._forward()
                finally:
                    with proxy.lock:
                        proxy.spans.append((start, time.monotonic()))

            def _forward(self) -> None:
                if proxy.latency:
                    time.sleep(proxy.latency)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy._take(self.command, self.path)
                with proxy.lock:
                    proxy.requests.append(f"{self.command} {self.path.split('?')[0]}")
                if fault in ("500", "503", "429", "400"):
                    self.send_response(int(fault))
                    if fault == "429":
                        self.send_header("Retry-After", "1")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items()}
                conn.request(self.command, self.path, body=body, headers=headers)
                up = conn.getresponse()
                data = up.read() if self.command != "HEAD" else b""
                conn.close()
                if fault == "truncate":
                    data = data[: len(data) // 2]
                if fault == "corrupt":
                    data = data[:-1] + bytes([data[-1] ^ 0xFF])
                self.send_response(up.status)
                for k, v in up.getheaders():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                full = up.getheader("Content-Length") if self.command == "HEAD" else len(data)
                self.send_header("Content-Length", str(full if fault != "drop" else len(data)))
                self.end_headers()
                if fault == "drop":
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def round_trips(self, since: int = 0) -> int:
        """The sequential rounds among the requests from number `since` on: the longest chain
        of requests each sent after the previous one was answered."""
        with self.lock:
            spans = sorted(self.spans[since:])
        depth: list[int] = []
        for i, (start, _) in enumerate(spans):
            depth.append(1 + max((depth[j] for j in range(i) if spans[j][1] <= start), default=0))
        return max(depth, default=0)

    def _take(self, method: str, path: str) -> str | None:
        with self.lock:
            for i, (m, sub, fault) in enumerate(self.faults):
                if m == method and sub in path:
                    del self.faults[i]
                    self.injected.append(f"{fault} {method} {path.split('?')[0]}")
                    return fault
        return None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
