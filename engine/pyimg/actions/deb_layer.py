"""The `deb_layer` builtin: one canonical layer tar from a set of Debian `.deb` packages."""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import replace
from pathlib import Path
from typing import Any

from pyimg.actions._common import input_path, layer_mtime, params_dict, write_tar_output
from pyimg.actions.builtins import builtin
from pyimg.core.builtin import BuiltinCall
from pyimg.core.streams import ByteWriter
from pyimg.errors import UserInputError
from pyimg.oci.deb import DEBIAN_ARCHITECTURES, DebCache, UnpackedDeb, read_deb
from pyimg.oci.tar import TarEntry, normalize_path, write_tar

__all__ = ["PARAMS", "deb_layer", "through_links", "write_deb_layer_tar"]

PARAMS = {"debs", "mtime", "users", "groups", "platform"}
STATUS_DIR = "var/lib/dpkg/status.d"
CA_BUNDLE = "etc/ssl/certs/ca-certificates.crt"
_CA_SOURCES = "usr/share/ca-certificates/"
_CHUNK = 1 << 20


def _content_digest(entry: TarEntry) -> str:
    assert entry.src is not None and entry.size is not None
    h = hashlib.sha256()
    with open(entry.src, "rb") as f:
        f.seek(entry.offset)
        left = entry.size
        while left:
            chunk = f.read(min(left, _CHUNK))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def _same(a: TarEntry, b: TarEntry) -> bool:
    """Whether two packages ship the same entry (dpkg shares such directories and, for
    Multi-Arch: same packages, such files)."""
    if (a.kind, a.mode, a.uid, a.gid) != (b.kind, b.mode, b.uid, b.gid):
        return False
    if a.kind == "dir":
        return True
    if a.kind == "symlink":
        return a.target == b.target
    if a.kind == "hardlink":
        return normalize_path(a.target) == normalize_path(b.target)
    return a.size == b.size and _content_digest(a) == _content_digest(b)


def through_links(path: str, links: dict[str, str], what: str) -> str:
    """`path` with each leading directory that is a symlink in the layer replaced by its target:
    dpkg installs `bin/sh` through `bin -> usr/bin` on a merged-/usr system. A link leaving the
    layer is not followed (the layer then refuses the path under a symlink)."""
    for _ in range(40):
        parts = path.split("/")
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            target = links.get(prefix)
            if target is None:
                continue
            base = "" if target.startswith("/") else posixpath.dirname(prefix)
            resolved = posixpath.normpath(posixpath.join(base, target.lstrip("/")))
            if resolved in (".", "") or resolved == ".." or resolved.startswith("../"):
                return path
            path = "/".join([resolved, *parts[i:]])
            break
        else:
            return path
    raise UserInputError(f"{what}: /{path}: too many levels of symbolic links")


def merge_packages(packages: list[UnpackedDeb], what: str) -> dict[str, tuple[str, TarEntry]]:
    """Every path of every package, with the package that ships it; a path shipped twice with
    different content is an error naming both packages. Paths under a directory symlink that a
    package ships (merged /usr: `bin -> usr/bin`) land where the link points, and a directory
    shipped where a package ships a symlink is the symlink, as dpkg leaves them."""
    links = {
        e.path: e.target for p in packages for e in p.entries if e.kind == "symlink"
    }
    merged: dict[str, tuple[str, TarEntry]] = {}
    for package in sorted(packages, key=lambda p: p.name):
        for entry in package.entries:
            if links:
                if entry.kind == "dir" and entry.path in links:
                    continue
                path = through_links(entry.path, links, what)
                if path != entry.path:  # most are not under a link: no copy of the entry
                    entry = replace(entry, path=path)
                if entry.kind == "hardlink":
                    target = normalize_path(entry.target, what)
                    entry = replace(entry, target=through_links(target, links, what))
            old = merged.get(entry.path)
            if old is None:
                merged[entry.path] = (package.name, entry)
            elif not _same(old[1], entry):
                raise UserInputError(
                    f"{what}: /{entry.path} is in packages {old[0]!r} ({old[1].kind}) and "
                    f"{package.name!r} ({entry.kind}) with different content or metadata "
                    "(dpkg would refuse to install both)"
                )
    return merged


def _id(value: Any, what: str) -> int:
    if not isinstance(value, str) or not value.isdigit():
        raise UserInputError(f"{what}: expected a number, got {value!r}")
    return int(value)


def account_files(users: Any, groups: Any, what: str) -> list[TarEntry]:
    """/etc/passwd, /etc/group and home directories for the named users and groups.

    users: {name: "UID" or "UID:GID"}; a user without ":GID" has GID = UID. groups: {name: "GID"}.
    A user's primary GID with no group of its own is given a group named after the user. root
    (0:0) is always present. Homes are /home/NAME (owned by the user, 0755), shells /sbin/nologin.
    """
    if not isinstance(users, dict) or not isinstance(groups, dict):
        raise UserInputError(f"{what}: users and groups must be dicts of name to id")
    group_ids = {"root": 0}
    for name, gid in sorted(groups.items()):
        _check_name(name, f"{what}: groups")
        group_ids[name] = _id(gid, f"{what}: groups[{name!r}]")
    accounts = [("root", 0, 0, "/root")]
    for name, ids in sorted(users.items()):
        _check_name(name, f"{what}: users")
        if name == "root":
            raise UserInputError(f"{what}: users: 'root' is always present (uid 0)")
        uid_text, _, gid_text = str(ids).partition(":")
        uid = _id(uid_text, f"{what}: users[{name!r}]")
        gid = _id(gid_text, f"{what}: users[{name!r}] gid") if gid_text else uid
        if gid not in group_ids.values():
            if name in group_ids:
                raise UserInputError(
                    f"{what}: users[{name!r}]: gid {gid} has no group, and group {name!r} has "
                    f"gid {group_ids[name]}"
                )
            group_ids[name] = gid
        accounts.append((name, uid, gid, f"/home/{name}"))
    _unique([a[1] for a in accounts], f"{what}: users: two users share a uid")
    _unique(list(group_ids.values()), f"{what}: groups: two groups share a gid")
    passwd = "".join(
        f"{name}:x:{uid}:{gid}:{name}:{home}:/sbin/nologin\n" for name, uid, gid, home in
        sorted(accounts, key=lambda a: a[1])
    )
    group = "".join(
        f"{name}:x:{gid}:\n" for name, gid in sorted(group_ids.items(), key=lambda g: g[1])
    )
    entries = [
        TarEntry("etc/passwd", "file", mode=0o644, data=passwd.encode()),
        TarEntry("etc/group", "file", mode=0o644, data=group.encode()),
        TarEntry("root", "dir", mode=0o700),
    ]
    for _name, uid, gid, home in accounts[1:]:
        entries.append(TarEntry(home.lstrip("/"), "dir", mode=0o755, uid=uid, gid=gid))
    return entries


def _check_name(name: str, what: str) -> None:
    if not name or any(c in name for c in ":\n/") or name.startswith("-"):
        raise UserInputError(f"{what}: invalid name {name!r}")


def _unique(values: list[int], message: str) -> None:
    seen = set()
    for value in values:
        if value in seen:
            raise UserInputError(f"{message} ({value})")
        seen.add(value)


def ca_bundle(merged: dict[str, tuple[str, TarEntry]]) -> TarEntry | None:
    """The bundle that ca-certificates' postinst (update-ca-certificates) would build: every
    certificate under /usr/share/ca-certificates, sorted by path, each ending in a newline."""
    if CA_BUNDLE in merged:
        return None
    certs = sorted(
        p for p, (_, e) in merged.items()
        if p.startswith(_CA_SOURCES) and p.endswith(".crt") and e.kind == "file"
    )
    if not certs:
        return None
    parts = []
    for path in certs:
        entry = merged[path][1]
        assert entry.src is not None and entry.size is not None
        with open(entry.src, "rb") as f:
            f.seek(entry.offset)
            data = f.read(entry.size)
        parts.append(data if data.endswith(b"\n") else data + b"\n")
    return TarEntry(CA_BUNDLE, "file", mode=0o644, data=b"".join(parts))


def _read_debs(call: BuiltinCall, debs: list[Any], scratch: Path, what: str) -> list[UnpackedDeb]:
    """Every `.deb` read, in the order given: from the repository cache's decoded entry of its
    sha256 (oci/deb.py), decoded there first when there is none. With several build jobs they
    are read on that many threads, largest first (xz, zstd and zlib release the GIL): decoding
    the packages was a third of a cold Debian base's layer, and the rest (tar into gzip) must
    wait for all of them, since the layer's entries are sorted across packages."""
    paths = [input_path(call, deb, f"{what}: debs[{i}]") for i, deb in enumerate(debs)]
    cache = DebCache(call.content_store) if call.content_store is not None else None

    def read(i: int) -> UnpackedDeb:
        call.check_cancelled()
        digest = call.input_digests.get(debs[i])
        if cache is not None and digest is not None:
            return cache.read(paths[i], digest, f"{what}: {debs[i]}")
        return read_deb(paths[i], scratch, f"{what}: {debs[i]}")

    if call.jobs <= 1 or len(paths) <= 1:
        return [read(i) for i in range(len(paths))]
    from concurrent.futures import ThreadPoolExecutor

    largest_first = sorted(range(len(paths)), key=lambda i: -paths[i].stat().st_size)
    with ThreadPoolExecutor(max_workers=call.jobs) as pool:
        futures = {i: pool.submit(read, i) for i in largest_first}
        try:
            # In the order given, so that of two bad packages the first is named, as reading
            # one by one would.
            return [futures[i].result() for i in range(len(paths))]
        finally:
            for future in futures.values():
                future.cancel()


def _check_architectures(architectures: dict[str, str], platform: Any, what: str) -> None:
    """The packages' own `Architecture` fields (never their file names, which anyone may
    write) name one Debian architecture, and it runs on `platform` (`os/arch[/variant]`, when
    the layer is built for one); `all` fits any."""
    if len(architectures) > 1:
        (a, a_deb), (b, b_deb) = sorted(architectures.items())[:2]
        raise UserInputError(
            f"{what}: packages of two architectures in one layer: {a_deb} (Architecture: {a}) "
            f"and {b_deb} (Architecture: {b})")
    if not platform or not architectures:
        return
    if not isinstance(platform, str):
        raise UserInputError(f"{what}: platform must be 'os/architecture[/variant]', got {platform!r}")
    parts = platform.split("/")
    want_arch, want_variant = parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else ""
    ((deb_arch, deb),) = architectures.items()
    arch, variant = DEBIAN_ARCHITECTURES.get(deb_arch, (deb_arch, ""))
    if arch != want_arch or (variant and want_variant and variant != want_variant):
        raise UserInputError(
            f"{what}: {deb} is a package of Debian architecture {deb_arch} (its control file "
            f"says Architecture: {deb_arch}) but the platform is {platform}: use the packages "
            f"of {want_arch} (e.g. select() on the platform)")


def write_deb_layer_tar(call: BuiltinCall, params: dict[str, Any], out: ByteWriter, scratch: Path,
                        what: str = "deb_layer") -> None:
    """Write the canonical tar of the `.deb`s that deb_layer `params` name to `out` (the one
    definition of those bytes: `oci_layer` streams the same tar into its compressor)."""
    unknown = sorted(set(params) - PARAMS)
    if unknown:
        raise UserInputError(f"{what}: unknown params {unknown}")
    mtime = layer_mtime(params, what)
    debs = params.get("debs") or []
    if not isinstance(debs, list):
        raise UserInputError(f"{what}: debs must be a list of inputs")
    packages: list[UnpackedDeb] = []
    names: dict[str, str] = {}
    architectures: dict[str, str] = {}  # Debian architecture -> the first .deb of it
    for deb, package in zip(debs, _read_debs(call, debs, scratch, what), strict=True):
        if package.architecture != "all":
            architectures.setdefault(package.architecture, deb)
        if package.name in names:
            raise UserInputError(
                f"{what}: package {package.name!r} is given twice ({names[package.name]} and {deb})"
            )
        names[package.name] = deb
        packages.append(package)
    _check_architectures(architectures, params.get("platform"), what)
    merged = merge_packages(packages, what)
    extra: list[TarEntry] = []
    for package in packages:
        # The status records as distroless writes them (rules_distroless' dpkg_statusd): the
        # control file byte for byte, and md5sums beside it. No `Status:` line is added: trivy
        # and syft read a record without one as installed, and records identical to
        # distroless' are read by every scanner that reads distroless images.
        record = posixpath.join(STATUS_DIR, package.name)
        extra.append(TarEntry(record, "file", mode=0o644, data=package.control))
        if package.md5sums is not None:
            extra.append(TarEntry(record + ".md5sums", "file", mode=0o644, data=package.md5sums))
    users, groups = params.get("users") or {}, params.get("groups") or {}
    if users or groups:
        for entry in account_files(users, groups, what):
            shipped = merged.get(entry.path)
            if shipped is not None and entry.kind == "file":
                raise UserInputError(
                    f"{what}: /{entry.path} is shipped by package {shipped[0]!r}; users and "
                    "groups would overwrite it"
                )
            if shipped is not None:
                continue  # a directory a package already ships (e.g. /root) keeps its metadata
            extra.append(entry)
    bundle = ca_bundle(merged)
    if bundle is not None:
        extra.append(bundle)
    for entry in extra:
        if entry.path in merged:
            raise UserInputError(f"{what}: /{entry.path} is shipped by package {merged[entry.path][0]!r}")
    entries = [e for _, e in merged.values()] + extra  # each merged under its own path
    write_tar(out, entries, mtime=mtime, uid=0, gid=0, check_cancelled=call.check_cancelled)


@builtin("deb_layer")
def deb_layer(call: BuiltinCall) -> None:
    """Write one uncompressed canonical layer tar of the `.deb`s `params` name to the one output.

    params: {"debs": [EXEC_PATH of a .deb], "mtime": int, "users": {name: "UID[:GID]"},
             "groups": {name: "GID"}}
    The data entries of every package keep their modes, owners, link targets and hard links
    (mtimes become `mtime`); a path two packages ship differently is an error naming both; a
    path escaping the root, a device node or a fifo is an error naming the package and path.
    Added: /var/lib/dpkg/status.d/<package> (and <package>.md5sums) per package, the
    ca-certificates bundle when certificates are present and no package ships the bundle, and
    /etc/passwd, /etc/group and homes when users or groups are given. No maintainer script runs.
    """
    params = params_dict(call, PARAMS, "deb_layer")
    write_tar_output(call, "deb_layer", lambda sink, scratch: write_deb_layer_tar(call, params, sink, scratch))
