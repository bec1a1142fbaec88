"""Test fixtures for Debian inputs without the network: small `.deb`s made with dpkg-deb, a
signed apt archive laid out like Debian's (pool/, dists/SUITE/{InRelease,Release}, Packages.xz),
and a loopback http server for it. Shared by the deb_index and deb_layer tests."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import lzma
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path

import pytest

TOOLS = ("dpkg-deb", "gpg", "gpgv")


def require_tools() -> None:
    """Skip the calling test where the Debian tools are missing (tools/setup --system installs
    them)."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (tools/setup --system)")


@dataclass
class Deb:
    """A package to build: control fields plus files `{path: bytes or (bytes, mode)}` under the
    root."""

    name: str
    version: str = "1.0"
    architecture: str = "amd64"
    depends: str = ""
    pre_depends: str = ""
    provides: str = ""
    multi_arch: str = ""
    files: dict[str, bytes | tuple[bytes, int]] = field(default_factory=dict)
    extra: str = ""  # further control lines, as written (Conflicts, Breaks, Essential, ...)

    def control(self) -> str:
        lines = [
            f"Package: {self.name}",
            f"Version: {self.version}",
            f"Architecture: {self.architecture}",
            "Maintainer: pyimg tests <tests@example.invalid>",
        ]
        for key, value in (("Pre-Depends", self.pre_depends), ("Depends", self.depends),
                           ("Provides", self.provides), ("Multi-Arch", self.multi_arch)):
            if value:
                lines.append(f"{key}: {value}")
        lines.extend(line for line in self.extra.splitlines() if line.strip())
        lines.append(f"Description: test package {self.name}")
        return "\n".join(lines) + "\n"

    def file_name(self) -> str:
        """The name in the archive's pool: Debian's pool names drop the epoch."""
        return f"{self.name}_{self.version.split(':', 1)[-1]}_{self.architecture}.deb"


def build_deb(deb: Deb, out_dir: Path, compression: str = "gzip") -> Path:
    """`dpkg-deb --build` of the package, owned root:root; `compression` is dpkg-deb's -Z (gzip
    by default: it builds fast; xz and zstd as Debian's archive uses them)."""
    with tempfile.TemporaryDirectory(prefix="pyimg-deb-") as tmp:
        root = Path(tmp) / "root"
        (root / "DEBIAN").mkdir(parents=True)
        (root / "DEBIAN" / "control").write_text(deb.control())
        files = deb.files or {f"usr/share/doc/{deb.name}/copyright": b"public domain\n"}
        for path, spec in files.items():
            data, mode = spec if isinstance(spec, tuple) else (spec, 0o644)
            target = root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            target.chmod(mode)
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / deb.file_name()
        subprocess.run(
            ["dpkg-deb", "--root-owner-group", f"-Z{compression}", "--build", str(root), str(out)],
            check=True, capture_output=True,
            env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"},
        )
        return out


def _stop_agent(home: str) -> None:
    subprocess.run(["gpgconf", "--homedir", home, "--kill", "gpg-agent"], capture_output=True)


class SigningKey:
    """A throwaway OpenPGP key in its own GNUPGHOME; `keyring()` is its public key, binary."""

    def __init__(self, home: Path, uid: str = "pyimg test archive <archive@example.invalid>"):
        self.home = home
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._gpg("--quick-generate-key", uid, "ed25519", "sign", "never")
        # gpg starts an agent per home that outlives the test; stop it with the key (or at exit).
        weakref.finalize(self, _stop_agent, str(home))

    def _gpg(self, *args: str, stdin: bytes | None = None) -> bytes:
        return subprocess.run(
            ["gpg", "--homedir", str(self.home), "--batch", "--quiet", "--pinentry-mode",
             "loopback", "--passphrase", "", *args],
            check=True, capture_output=True, input=stdin,
        ).stdout

    def keyring(self, armor: bool = False) -> bytes:
        return self._gpg(*(["--armor"] if armor else []), "--export")

    def clearsign(self, text: bytes) -> bytes:
        return self._gpg("--digest-algo", "SHA256", "--clearsign", stdin=text)

    def detach_sign(self, text: bytes) -> bytes:
        return self._gpg("--digest-algo", "SHA256", "--armor", "--detach-sign", stdin=text)


@dataclass
class Archive:
    """A signed apt archive under `root`: `publish()` lays it out again from `packages`."""

    root: Path
    key: SigningKey
    suite: str = "bookworm"
    component: str = "main"
    architectures: tuple[str, ...] = ("amd64", "arm64")
    packages: list[Deb] = field(default_factory=list)
    date: float | None = None  # Release's Date (now when None)
    valid_until: float | None = None  # Release's Valid-Until (none when None)
    inrelease: bool = True  # False: only Release and its detached Release.gpg, as older tools
    # "": Architecture: all packages in each binary-ARCH index only; "also": in binary-all too,
    # and Release says `No-Support-for-Architecture-all: Packages` (as Debian's archive does);
    # "only": in binary-all only.
    binary_all: str = ""

    def publish(self) -> None:
        pool = self.root / "pool" / self.component
        dists = self.root / "dists" / self.suite
        shutil.rmtree(dists, ignore_errors=True)
        stanzas: dict[str, list[str]] = {a: [] for a in self.architectures}
        if self.binary_all:
            stanzas["all"] = []
        for deb in self.packages:
            path = build_deb(deb, pool)
            data = path.read_bytes()
            stanza = deb.control().rstrip("\n") + (
                f"\nFilename: pool/{self.component}/{path.name}\nSize: {len(data)}\n"
                f"SHA256: {hashlib.sha256(data).hexdigest()}\n"
            )
            for arch in self.architectures:
                if deb.architecture == arch or (
                        deb.architecture == "all" and self.binary_all != "only"):
                    stanzas[arch].append(stanza)
            if deb.architecture == "all" and self.binary_all:
                stanzas["all"].append(stanza)
        listed = []
        for arch, entries in stanzas.items():
            rel = f"{self.component}/binary-{arch}"
            (dists / rel).mkdir(parents=True, exist_ok=True)
            text = "\n".join(entries).encode()
            for name, data in (("Packages", text), ("Packages.xz", lzma.compress(text))):
                (dists / rel / name).write_bytes(data)
                listed.append(f" {hashlib.sha256(data).hexdigest()} {len(data)} {rel}/{name}")
        release = (
            f"Origin: pyimg-tests\nSuite: {self.suite}\nCodename: {self.suite}\n"
            f"Date: {formatdate(self.date, usegmt=True)}\n"
            + (f"Valid-Until: {formatdate(self.valid_until, usegmt=True)}\n"
               if self.valid_until is not None else "") +
            f"Architectures: {' '.join(self.architectures)}\nComponents: {self.component}\n"
            + ("No-Support-for-Architecture-all: Packages\n" if self.binary_all == "also" else "")
            + "SHA256:\n" + "\n".join(listed) + "\n"
        ).encode()
        (dists / "Release").write_bytes(release)
        (dists / "Release.gpg").write_bytes(self.key.detach_sign(release))
        if self.inrelease:
            (dists / "InRelease").write_bytes(self.key.clearsign(release))

    def pool_file(self, deb: Deb) -> Path:
        return self.root / "pool" / self.component / deb.file_name()


class ArchiveServer:
    """Serves a directory on loopback; `requests` lists the paths asked for."""

    def __init__(self, root: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.requests: list[str] = []
        self.httpd.requests = self.requests  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        self.server.requests.append(self.path)  # type: ignore[attr-defined]


@contextmanager
def serve(root: Path) -> Iterator[ArchiveServer]:
    server = ArchiveServer(root)
    try:
        yield server
    finally:
        server.close()


def make_deb(
    out_dir: Path,
    name: str,
    files: Mapping[str, bytes | tuple[bytes, int]] = {},
    *,
    symlinks: Mapping[str, str] = {},
    hardlinks: Mapping[str, str] = {},
    dirs: Mapping[str, int] = {},
    version: str = "1.0",
    arch: str = "amd64",
    compression: str = "xz",
    depends: str = "",
) -> Path:
    """Build `<name>_<version>_<arch>.deb` in `out_dir` with `dpkg-deb --build`, owned 0:0: the
    richer sibling of `build_deb` for the deb_layer tests (modes, links, directories, md5sums).

    files: path -> content or (content, mode); symlinks: path -> target; hardlinks: path -> the
    path (in `files`) it links to; dirs: path -> mode. compression: xz, gzip, zstd or none.
    """
    root = out_dir / f".{name}-{version}-{arch}-root"
    if root.exists():
        shutil.rmtree(root)
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN").chmod(0o755)
    (root / "DEBIAN" / "control").write_text(Deb(name, version, arch, depends=depends).control())
    for path, mode in dirs.items():
        d = root / path
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(mode)
    for path, spec in files.items():
        data, mode = spec if isinstance(spec, tuple) else (spec, 0o644)
        f = root / path
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
        f.chmod(mode)
    # As dh_md5sums writes it (dpkg-deb does not): scanners read it from status.d.
    md5sums = "".join(
        f"{hashlib.md5(data).hexdigest()}  {path}\n"
        for path, data in sorted((p, (s[0] if isinstance(s, tuple) else s)) for p, s in files.items())
    )
    (root / "DEBIAN" / "md5sums").write_text(md5sums)
    (root / "DEBIAN" / "md5sums").chmod(0o644)
    for path, target in hardlinks.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        os.link(root / target, root / path)
    for path, target in symlinks.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, root / path)
    out = out_dir / f"{name}_{version}_{arch}.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", f"-Z{compression}", "--build", str(root), str(out)],
        check=True,
        capture_output=True,
        # Without it the ar and tar members carry the current second: two calls a second apart
        # give different .debs (and different SBOM checksums in tests comparing two workspaces).
        env={**os.environ, "SOURCE_DATE_EPOCH": "1700000000"},
    )
    shutil.rmtree(root)
    return out


def make_raw_deb(out: Path, name: str, data_members: list[tarfile.TarInfo]) -> Path:
    """A `.deb` written by hand (ar + uncompressed tars), for what dpkg-deb refuses to build:
    paths escaping the root, device nodes. Members carry no content."""

    def tar_of(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
            for info, data in members:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data) if data else None)
        return buf.getvalue()

    control = tarfile.TarInfo("./control")
    control_tar = tar_of([(control, Deb(name).control().encode())])
    data_tar = tar_of([(m, b"") for m in data_members])

    def member(member_name: str, data: bytes) -> bytes:
        header = (
            f"{member_name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}".encode() + b"`\n"
        )
        return header + data + (b"\n" if len(data) % 2 else b"")

    out.write_bytes(
        b"!<arch>\n"
        + member("debian-binary", b"2.0\n")
        + member("control.tar", control_tar)
        + member("data.tar", data_tar)
    )
    return out
