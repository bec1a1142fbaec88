"""npm packages made in the test: tarballs with the `package/` prefix, an npm-style registry on
loopback (tarballs and packuments, an optional bearer token), and package-lock.json v2/v3."""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.server
import io
import json
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Pkg:
    """One package version: files (path -> text, or (text, mode)), bins, os/cpu, dependencies."""

    name: str
    version: str
    files: dict[str, str | tuple[str, int]] = field(default_factory=dict)
    bin: dict[str, str] = field(default_factory=dict)
    os: list[str] = field(default_factory=list)
    cpu: list[str] = field(default_factory=list)
    dependencies: dict[str, str] = field(default_factory=dict)
    optional_dependencies: dict[str, str] = field(default_factory=dict)
    license: str | None = None  # package.json's `license`

    @property
    def base(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    def manifest(self) -> dict[str, object]:
        m: dict[str, object] = {"name": self.name, "version": self.version}
        if self.license is not None:
            m["license"] = self.license
        for key, value in (("bin", self.bin), ("os", self.os), ("cpu", self.cpu),
                           ("dependencies", self.dependencies),
                           ("optionalDependencies", self.optional_dependencies)):
            if value:
                m[key] = value
        return m

    def tarball(self) -> bytes:
        """A gzip tar as `npm pack` makes it: `package/` prefix, package.json first."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
            members: dict[str, tuple[bytes, int]] = {
                "package.json": (json.dumps(self.manifest(), indent=2).encode(), 0o644)}
            for path, spec in self.files.items():
                text, mode = spec if isinstance(spec, tuple) else (spec, 0o644)
                members[path] = (text.encode(), mode)
            for path, (data, mode) in members.items():
                info = tarfile.TarInfo("package/" + path)
                info.size, info.mode, info.mtime = len(data), mode, 499162500
                tf.addfile(info, io.BytesIO(data))
        return gzip.compress(buf.getvalue(), mtime=0)  # the same bytes every time


def integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


class Registry:
    """Serves `/<name>/-/<base>-<version>.tgz` and packuments `/<name>` from memory."""

    def __init__(self, token: str | None = None) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.token = token
        registry = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                registry.requests.append(self.path)
                if registry.token and self.headers.get("Authorization") != f"Bearer {registry.token}":
                    self.send_response(401)
                    self.end_headers()
                    return
                data = registry.files.get(self.path.replace("%2f", "/").replace("%2F", "/"))
                if data is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def tarball_url(self, pkg: Pkg) -> str:
        return f"{self.url}/{pkg.name}/-/{pkg.base}-{pkg.version}.tgz"

    def publish(self, pkg: Pkg) -> bytes:
        data = pkg.tarball()
        self.files[f"/{pkg.name}/-/{pkg.base}-{pkg.version}.tgz"] = data
        doc = json.loads(self.files.get(f"/{pkg.name}", b'{"versions": {}}'))
        doc.update({"name": pkg.name, "dist-tags": {"latest": pkg.version}})
        doc["versions"][pkg.version] = {**pkg.manifest(), "dist": {
            "tarball": self.tarball_url(pkg), "integrity": integrity(data)}}
        self.files[f"/{pkg.name}"] = json.dumps(doc).encode()
        return data


@contextmanager
def serve(registry: Registry) -> Iterator[Registry]:
    thread = threading.Thread(target=registry.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield registry
    finally:
        registry.httpd.shutdown()
        registry.httpd.server_close()


@dataclass
class Installed:
    """A package at a path of the lock's tree."""

    path: str
    pkg: Pkg
    dev: bool = False
    optional: bool = False


def lock_json(name: str, deps: dict[str, str], dev_deps: dict[str, str],
              optional_deps: dict[str, str], tree: list[Installed], registry: Registry,
              version: int = 3) -> dict[str, object]:
    """package-lock.json as npm writes it (v3; v2 adds the legacy `dependencies` tree)."""
    root: dict[str, object] = {"name": name, "version": "1.0.0"}
    for key, value in (("dependencies", deps), ("devDependencies", dev_deps),
                       ("optionalDependencies", optional_deps)):
        if value:
            root[key] = value
    packages: dict[str, object] = {"": root}
    for node in tree:
        data = registry.publish(node.pkg)
        entry: dict[str, object] = {"version": node.pkg.version,
                                    "resolved": registry.tarball_url(node.pkg),
                                    "integrity": integrity(data)}
        if node.path.rsplit("node_modules/", 1)[-1] != node.pkg.name:
            entry["name"] = node.pkg.name
        for key, value in (("dependencies", node.pkg.dependencies),
                           ("optionalDependencies", node.pkg.optional_dependencies),
                           ("bin", node.pkg.bin), ("os", node.pkg.os), ("cpu", node.pkg.cpu)):
            if value:
                entry[key] = value
        if node.dev:
            entry["dev"] = True
        if node.optional:
            entry["optional"] = True
        packages[node.path] = entry
    doc: dict[str, object] = {"name": name, "version": "1.0.0", "lockfileVersion": version,
                              "requires": True, "packages": packages}
    if version == 2:
        doc["dependencies"] = {n.path.rsplit("node_modules/", 1)[-1]: {
            "version": n.pkg.version} for n in tree if n.path.count("node_modules/") == 1}
    return doc


def package_json(name: str, deps: dict[str, str], dev_deps: dict[str, str],
                 optional_deps: dict[str, str]) -> dict[str, object]:
    doc: dict[str, object] = {"name": name, "version": "1.0.0"}
    for key, value in (("dependencies", deps), ("devDependencies", dev_deps),
                       ("optionalDependencies", optional_deps)):
        if value:
            doc[key] = value
    return doc


def sample_tree() -> tuple[dict[str, str], dict[str, str], dict[str, str], list[Installed]]:
    """A tree with what the layout must get right: bins (top-level and nested), a scoped
    package, two versions of one package (nested), an optional package for linux/x64 and one
    for darwin (with a dependency only it needs), a dev package, modes 0755 and 0600."""
    a1 = Pkg("a", "1.0.0", {"index.js": "module.exports = 'a1';\n",
                            "bin/cli.js": "#!/usr/bin/env node\nconsole.log('a1')\n"},
             bin={"a-cli": "bin/cli.js"})
    a2 = Pkg("a", "2.0.0", {"index.js": "module.exports = 'a2';\n",
                            "bin/cli.js": "#!/usr/bin/env node\nconsole.log('a2')\n"},
             bin={"a-cli": "bin/cli.js"})
    x = Pkg("@s/x", "2.0.0", {"x.js": ("#!/usr/bin/env node\nmodule.exports = 'x';\n", 0o755),
                              "lib/secret.js": ("module.exports = 1;\n", 0o600)},
            bin={"xx": "x.js"})
    c = Pkg("c", "1.0.0", {"index.js": "module.exports = require('a');\n"},
            dependencies={"a": "2.0.0"})
    linux = Pkg("opt-linux", "1.0.0", {"index.js": "module.exports = 'linux';\n"},
                os=["linux"], cpu=["x64"])
    darwin = Pkg("opt-darwin", "1.0.0", {"index.js": "module.exports = 'darwin';\n"},
                 os=["darwin"], dependencies={"darwin-helper": "1.0.0"})
    helper = Pkg("darwin-helper", "1.0.0", {"index.js": "module.exports = 'h';\n"})
    dev = Pkg("d", "1.0.0", {"index.js": "module.exports = 'dev';\n"}, bin={"d": "index.js"})
    deps = {"a": "1.0.0", "@s/x": "2.0.0", "c": "1.0.0"}
    optional = {"opt-linux": "1.0.0", "opt-darwin": "1.0.0"}
    dev_deps = {"d": "1.0.0"}
    tree = [
        Installed("node_modules/a", a1), Installed("node_modules/@s/x", x),
        Installed("node_modules/c", c), Installed("node_modules/c/node_modules/a", a2),
        Installed("node_modules/opt-linux", linux, optional=True),
        Installed("node_modules/opt-darwin", darwin, optional=True),
        Installed("node_modules/darwin-helper", helper, optional=True),
        Installed("node_modules/d", dev, dev=True),
    ]
    return deps, dev_deps, optional, tree


def write_project(root: Path, registry: Registry, version: int = 3,
                  tree: tuple[dict[str, str], dict[str, str], dict[str, str],
                              list[Installed]] | None = None) -> None:
    """package.json and package-lock.json of the sample tree in `root` (made if absent)."""
    deps, dev_deps, optional, nodes = tree or sample_tree()
    root.mkdir(parents=True, exist_ok=True)
    (root / "package.json").write_text(
        json.dumps(package_json("web", deps, dev_deps, optional), indent=2) + "\n")
    (root / "package-lock.json").write_text(json.dumps(
        lock_json("web", deps, dev_deps, optional, nodes, registry, version),
        indent=2) + "\n")
