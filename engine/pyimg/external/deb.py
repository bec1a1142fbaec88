"""`deb_index`: signed apt archives resolved into pinned `.deb` files (docs/external-inputs.md).

`pyimg lock` fetches each source's InRelease, verifies it with the system's `gpgv` against the
declared keyring, fetches the Packages indexes checked against Release's SHA256 list, resolves the
closure per architecture (external/deb_control.py) and records every `.deb` by URL, version,
sha256 and size. Building reads only the lock: the repository `@NAME` holds, per architecture,
the pinned `.deb` files and a BUILD file with one filegroup per package and one for the closure.

Why gpgv: it is the verifier apt itself runs (so the keyrings apt accepts are accepted here), it
needs no keyring directory or agent, and the Python OpenPGP libraries are either unmaintained or
pull a native crypto stack into every install for one signature check.
"""

from __future__ import annotations

import base64
import bz2
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Any

from pyimg.core.digest import canonical_json
from pyimg.errors import IntegrityError, PyimgError, UserInputError
from pyimg.external.deb_control import DebPackage, PackageIndex, parse_paragraphs, resolve
from pyimg.loading.module_file import DebIndex, DebSource

__all__ = [
    "DebPin",
    "deb_file_name",
    "entry_covers",
    "entry_pins",
    "lock_entry",
    "render_entry",
    "write_repo",
]

# Packages indexes in the order they are preferred when Release lists several.
_INDEX_NAMES = (("Packages.xz", lzma.decompress), ("Packages.gz", gzip.decompress),
                ("Packages.bz2", bz2.decompress), ("Packages", lambda b: b))

Fetch = Callable[[str], bytes]

_PACKAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9+.\-]*$")
_VERSION = re.compile(r"^[A-Za-z0-9.+~:\-]+$")
_ARCH = re.compile(r"^[a-z0-9][a-z0-9\-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class DebPin:
    """One `.deb` as pyimg.lock records it, for one architecture of the declaration."""

    name: str
    version: str
    architecture: str  # the package's own ("all" for architecture-independent packages)
    url: str
    sha256: str
    size: int

    def file_name(self) -> str:
        return deb_file_name(self.name, self.version, self.architecture)


def deb_file_name(name: str, version: str, architecture: str) -> str:
    """`<package>_<version>_<arch>.deb` with the epoch's ':' written `%3a`, as apt names them."""
    return f"{name}_{version.replace(':', '%3a')}_{architecture}.deb"


# -- signatures and Release -----------------------------------------------------------------


def _dearmor(data: bytes) -> bytes:
    """ASCII-armored key blocks as binary packets (gpgv reads binary keyrings only); every
    block of the file, so that a keyring may hold several keys."""
    packets = b""
    body: list[str] | None = None
    in_headers = False
    for line in data.decode("ascii", "replace").splitlines():
        if line.startswith("-----BEGIN PGP"):
            body, in_headers = [], True
        elif body is None:
            continue
        elif line.startswith("-----END PGP"):
            packets += base64.b64decode("".join(body))
            body = None
        elif in_headers and ":" in line:
            continue  # an armor header ("Comment: ...")
        elif line.startswith("="):  # the CRC line after the base64 body: not key data
            in_headers = False
        else:
            in_headers = False
            if line.strip():
                body.append(line.strip())
    return packets


def _gpgv(keyring: bytes, what: str, signed: bytes, detached: bytes | None = None) -> str:
    """The text a key of `keyring` made a good signature over: the clearsigned text of an
    InRelease (the unsigned text around it is never read), or `signed` itself when `detached`
    is its signature (Release.gpg)."""
    gpgv = shutil.which("gpgv")
    if gpgv is None:
        raise PyimgError(
            "deb_index needs `gpgv` to verify archive signatures (Debian package gpgv)"
        )
    with tempfile.TemporaryDirectory(prefix="pyimg-gpgv-") as tmp:
        keyfile = Path(tmp) / "keyring.gpg"
        keyfile.write_bytes(_dearmor(keyring) if keyring.lstrip().startswith(b"-----") else keyring)
        data = Path(tmp) / "Release"
        data.write_bytes(signed)
        out = Path(tmp) / "verified"
        args = [gpgv, "--homedir", tmp, "--keyring", str(keyfile), "--status-fd", "1"]
        if detached is None:
            args += ["--output", str(out), str(data)]
        else:
            (Path(tmp) / "Release.gpg").write_bytes(detached)
            args += [str(Path(tmp) / "Release.gpg"), str(data)]
        proc = subprocess.run(args, capture_output=True, env={**os.environ, "LC_ALL": "C"})
        status = proc.stdout.decode(errors="replace")
        if proc.returncode != 0 or "[GNUPG:] VALIDSIG" not in status or (
                detached is None and not out.exists()):
            detail = proc.stderr.decode(errors="replace").strip().splitlines()
            raise IntegrityError(
                f"{what}: the signature does not verify against the keyring"
                + (f" ({detail[-1].strip()})" if detail else "")
            )
        return (out.read_bytes() if detached is None else signed).decode(errors="replace")


def verify_inrelease(data: bytes, keyring: bytes, what: str) -> str:
    """The text InRelease signs, when a key of `keyring` made a good signature over it."""
    return _gpgv(keyring, what, data)


def verify_release(release: bytes, signature: bytes, keyring: bytes, what: str) -> str:
    """Release itself, when Release.gpg is a good signature over it by a key of `keyring`."""
    return _gpgv(keyring, what, release, signature)


def _signed_release(base: str, keyring: bytes, fetch: Fetch, label: str) -> tuple[str, str]:
    """The verified Release text of `base` (dists/SUITE) and the file it was read from:
    InRelease, else Release with its detached Release.gpg (archives made by older tools, and
    some mirrors, publish only those)."""
    try:
        inrelease = fetch(f"{base}/InRelease")
    except PyimgError as e:
        try:
            release, signature = fetch(f"{base}/Release"), fetch(f"{base}/Release.gpg")
        except PyimgError:
            raise e from None  # neither form: the InRelease error says what was tried first
        what = f"{base}/Release.gpg"
        return verify_release(release, signature, keyring, f"{label}: {what}"), what
    what = f"{base}/InRelease"
    return verify_inrelease(inrelease, keyring, f"{label}: {what}"), what


@dataclass(frozen=True)
class Release:
    date: float | None
    sha256: dict[str, tuple[str, int]]  # path under dists/SUITE/ -> (sha256, size)
    valid_until: float | None = None
    all_in_arch_indexes: bool = False  # No-Support-for-Architecture-all: Packages


def _release_time(fields: dict[str, str], name: str, what: str) -> float | None:
    if not fields.get(name):
        return None
    try:
        return parsedate_to_datetime(fields[name]).timestamp()
    except (TypeError, ValueError):
        raise UserInputError(f"{what}: cannot read {name} {fields[name]!r}") from None


def parse_release(text: str, what: str) -> Release:
    fields = next(parse_paragraphs(text), {})
    date = _release_time(fields, "Date", what)
    valid_until = _release_time(fields, "Valid-Until", what)
    hashes = {}
    for line in fields.get("SHA256", "").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1].isdigit():
            hashes[parts[2]] = (parts[0].lower(), int(parts[1]))
    if not hashes:
        raise UserInputError(f"{what}: no SHA256 list (pyimg checks indexes by SHA256)")
    all_in_arch = fields.get("No-Support-for-Architecture-all", "").strip() == "Packages"
    return Release(date, hashes, valid_until, all_in_arch)


# -- indexes --------------------------------------------------------------------------------


def load_indexes(
    decl: DebIndex, keyring: bytes, fetch: Fetch, warn: Callable[[str], None],
    now: float | None = None,
) -> dict[str, PackageIndex]:
    """Every architecture's index, from all sources, each file verified before it is read."""
    indexes = {arch: PackageIndex(arch) for arch in decl.architectures}
    for source in decl.sources:
        base = f"{source.url}/dists/{source.suite}"
        try:
            signed, signed_file = _signed_release(base, keyring, fetch, f"deb_index '{decl.name}'")
            what = f"deb_index '{decl.name}': {signed_file}"
            release = parse_release(signed, what)
        except PyimgError as e:
            if e.origin is not None:
                raise
            raise type(e)(e.message, origin=decl.origin) from None
        when = now or time.time()
        if release.valid_until is not None and when > release.valid_until:
            # As apt: a signature says nothing of freshness, and a mirror (or an attacker)
            # replaying an old signed Release would hide every later security fix.
            raise IntegrityError(
                f"deb_index '{decl.name}': {signed_file} expired on "
                f"{formatdate(release.valid_until, usegmt=True)} (its Valid-Until): the "
                "mirror is stale or replays an old Release", origin=decl.origin)
        if release.date is not None:
            age_days = (when - release.date) / 86400
            if age_days > decl.max_release_age_days:
                warn(
                    f"{decl.origin}: warning: deb_index '{decl.name}': {signed_file} is "
                    f"{int(age_days)} days old (max_release_age_days = "
                    f"{decl.max_release_age_days}): the archive may be frozen or replayed"
                )
        for component in source.components:
            # Debian lists Architecture: all packages in every binary-ARCH index too, and says
            # so (`No-Support-for-Architecture-all: Packages`): apt then skips binary-all, and
            # so does pyimg (it is a third of the indexes' size). Elsewhere it is read once.
            shared = [] if release.all_in_arch_indexes else _read_packages(
                decl, source, release, f"{component}/binary-all", fetch)
            for arch in decl.architectures:
                own = _read_packages(decl, source, release, f"{component}/binary-{arch}", fetch)
                for pkg in own + shared:
                    if pkg.architecture in (arch, "all"):
                        indexes[arch].add(pkg)
    for arch, index in indexes.items():
        if not index.by_name:
            raise UserInputError(
                f"deb_index '{decl.name}': no Packages index for architecture {arch} in "
                + ", ".join(f"'{s}'" for s in decl.sources), origin=decl.origin)
    return indexes


def _read_packages(
    decl: DebIndex, source: DebSource, release: Release, directory: str, fetch: Fetch
) -> list[DebPackage]:
    for name, decompress in _INDEX_NAMES:
        path = f"{directory}/{name}"
        if path not in release.sha256:
            continue
        url = f"{source.url}/dists/{source.suite}/{path}"
        data = fetch(url)
        sha, size = release.sha256[path]
        got = hashlib.sha256(data).hexdigest()
        if got != sha or len(data) != size:
            raise IntegrityError(
                f"deb_index '{decl.name}': {url} has sha256 {got} ({len(data)} bytes), but the "
                f"signed Release lists {sha} ({size} bytes): the index was tampered with or is "
                "out of date",
                origin=decl.origin,
            )
        try:
            text = decompress(data).decode("utf-8", "replace")
        except (OSError, EOFError, lzma.LZMAError, ValueError) as e:
            raise UserInputError(f"deb_index '{decl.name}': cannot decompress {url}: {e}",
                                 origin=decl.origin) from None
        return [DebPackage.from_paragraph(p, source.url, url) for p in parse_paragraphs(text)]
    return []  # binary-all is often not a separate index: its packages sit in each binary-ARCH


# -- the lock entry -------------------------------------------------------------------------


def lock_entry(
    decl: DebIndex, keyring: bytes, fetch: Fetch, warn: Callable[[str], None]
) -> dict[str, Any]:
    indexes = load_indexes(decl, keyring, fetch, warn)
    debs: dict[str, dict[str, dict[str, Any]]] = {}
    for arch in decl.architectures:
        try:
            closure = resolve(indexes[arch], list(decl.packages), indexes)
        except UserInputError as e:
            raise type(e)(f"deb_index '{decl.name}': {e.message}", origin=decl.origin) from None
        debs[arch] = {}
        for pkg in closure:
            if not pkg.filename or len(pkg.sha256) != 64:
                raise UserInputError(
                    f"deb_index '{decl.name}': package {pkg.name} {pkg.version} ({arch}) has no "
                    "Filename or SHA256 in its index", origin=decl.origin)
            debs[arch][pkg.name] = {
                "arch": pkg.architecture, "sha256": pkg.sha256, "size": pkg.size,
                "url": pkg.url, "version": pkg.version,
            }
    return {
        "architectures": list(decl.architectures),
        "debs": debs,
        "digest": "sha256:" + hashlib.sha256(canonical_json(debs)).hexdigest(),
        "kind": decl.kind,
        "packages": list(decl.packages),
        "sources": [str(s) for s in decl.sources],
    }


def entry_covers(decl: DebIndex, entry: dict[str, Any]) -> bool:
    return (
        entry.get("sources") == [str(s) for s in decl.sources]
        and entry.get("architectures") == list(decl.architectures)
        and entry.get("packages") == list(decl.packages)
        and isinstance(entry.get("debs"), dict)
        and isinstance(entry.get("digest"), str)
    )


def entry_pins(decl: DebIndex, entry: dict[str, Any]) -> dict[str, list[DebPin]]:
    """The `.deb` files a lock entry pins, per architecture (a hand-edited entry is refused)."""
    pins: dict[str, list[DebPin]] = {}
    try:
        for arch in decl.architectures:
            pins[arch] = [
                DebPin(name, str(d["version"]), str(d["arch"]), str(d["url"]),
                       str(d["sha256"]), int(d["size"]))
                for name, d in sorted(entry["debs"][arch].items())
            ]
            for pin in pins[arch]:
                # The names become file names in the repository: nothing may leave it.
                if not (_PACKAGE_NAME.match(pin.name) and _VERSION.match(pin.version)
                        and _ARCH.match(pin.architecture) and _SHA256.match(pin.sha256)):
                    raise ValueError(f"package {pin.name!r} {pin.version!r} {pin.architecture!r} "
                                     f"sha256 {pin.sha256!r}")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserInputError(
            f"pyimg.lock: the entry of deb_index '{decl.name}' is malformed ({e}); run "
            f"`pyimg lock --update {decl.name}`", origin=decl.origin) from None
    return pins


def render_entry(entry: dict[str, Any]) -> str:
    """A deb_index lock entry with one package per line: two branches that add different
    packages merge."""
    head = {k: v for k, v in entry.items() if k != "debs"}
    lines = [json.dumps(head, sort_keys=True)[:-1] + ', "debs": {']
    arches = []
    for arch in sorted(entry["debs"]):
        pkgs = entry["debs"][arch]
        rows = [f"        {json.dumps(n)}: {json.dumps(pkgs[n], sort_keys=True)}"
                for n in sorted(pkgs)]
        arches.append(f"      {json.dumps(arch)}: {{\n" + ",\n".join(rows) + "\n      }")
    return lines[0] + "\n" + ",\n".join(arches) + "\n    }}"


# -- the materialized repository ------------------------------------------------------------


def write_repo(
    decl: DebIndex, pins: dict[str, list[DebPin]], tmp: Path,
    link: Callable[[DebPin, Path], None],
) -> None:
    """`<arch>/<file>.deb` for every pin, and `<arch>/BUILD.pyimg` with a filegroup per package
    and `packages` for the closure."""
    header = f'"""Generated by pyimg from {decl.origin}: deb_index(name = "{decl.name}")."""\n\n'
    (tmp / "BUILD.pyimg").write_text(header)
    for arch, arch_pins in pins.items():
        lines = [header.rstrip("\n"), ""]
        for pin in arch_pins:
            link(pin, tmp / arch / pin.file_name())
            lines.append(
                f"filegroup(name = {json.dumps(pin.name)}, srcs = [{json.dumps(pin.file_name())}])"
            )
        closure = ", ".join(json.dumps(p.file_name()) for p in arch_pins)
        lines.append(f'filegroup(name = "packages", srcs = [{closure}])')
        (tmp / arch).mkdir(parents=True, exist_ok=True)
        (tmp / arch / "BUILD.pyimg").write_text("\n".join(lines) + "\n")
