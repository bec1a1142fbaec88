"""The `npm_layer` builtin: one canonical layer holding `node_modules` exactly as an npm lock's
`packages` map lays it out, from the plan and tarballs of an `npm_lock` repository."""

from __future__ import annotations

import gzip
import posixpath
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyimg.actions._common import input_path, layer_mtime, params_dict, write_tar_output
from pyimg.actions.builtins import builtin
from pyimg.core import json_input
from pyimg.core.builtin import BuiltinCall
from pyimg.core.streams import ByteWriter
from pyimg.errors import UserInputError
from pyimg.oci.tar import TarEntry, normalize_path, write_tar

__all__ = ["NPM_LAYER_PARAMS", "installed_packages", "npm_layer", "platform_ok",
           "write_npm_layer_tar"]

NPM_LAYER_PARAMS = {"layout", "path", "platform", "libc", "include_dev", "mtime", "roots"}

# OCI architecture -> node's process.arch, which package.json's `cpu` lists.
_NODE_CPU = {"amd64": "x64", "arm64": "arm64", "arm": "arm", "386": "ia32", "s390x": "s390x",
             "ppc64le": "ppc64", "ppc64": "ppc64", "riscv64": "riscv64", "loong64": "loong64",
             "mips64le": "mips64el"}
_NODE_OS = {"linux": "linux", "windows": "win32", "darwin": "darwin", "freebsd": "freebsd"}
# npm extracts with fmode 0666 and the default umask 022 (pacote's entry mode).
_UMASK = 0o022


@dataclass(frozen=True)
class _Planned:
    """One package of the plan that will be installed."""

    path: str  # in the lock: node_modules/a/node_modules/b
    name: str
    tarball: str | None
    bins: dict[str, str]


def _check_list(value: str, wanted: list[str]) -> bool:
    """npm-install-checks' rule for `os`, `cpu` and `libc`: `!x` excludes x; any plain entry
    must match; a list of exclusions alone allows the rest."""
    if not wanted or wanted == ["any"]:
        return True
    negated, match = 0, False
    for entry in wanted:
        if entry.startswith("!"):
            negated += 1
            if entry[1:] == value:
                return False
        elif entry == value:
            match = True
    return match or negated == len(wanted)


def platform_ok(pkg: dict[str, Any], node_os: str, node_cpu: str, libc: str) -> bool:
    """Whether npm would install the package on this os, cpu and libc."""
    libcs = list(pkg.get("libc") or [])
    return (_check_list(node_os, list(pkg.get("os") or []))
            and _check_list(node_cpu, list(pkg.get("cpu") or []))
            and (node_os != "linux" or _check_list(libc, libcs)))


def _select(plan: list[dict[str, Any]], roots: dict[str, list[str]], platform: str, libc: str,
            include_dev: bool, what: str) -> list[_Planned]:
    """The packages npm ci would install: dev ones only with include_dev; an optional one whose
    os/cpu/libc rule out the platform is left out with what only it needs, as npm does; a
    required one is an error."""
    parts = platform.split("/")
    node_os = _NODE_OS.get(parts[0], parts[0])
    node_cpu = _NODE_CPU.get(parts[1], parts[1]) if len(parts) > 1 else ""
    by_path = {p["path"]: p for p in plan}
    dropped: set[str] = set()
    for pkg in plan:
        if pkg["dev"] and not include_dev:
            dropped.add(pkg["path"])
            continue
        if platform_ok(pkg, node_os, node_cpu, libc):
            continue
        if pkg["optional"] or pkg["dev_optional"]:
            dropped.add(pkg["path"])
            continue
        raise UserInputError(
            f"{what}: package '{pkg['path']}' ({pkg['name']}@{pkg['version']}) supports os "
            f"{pkg.get('os') or 'any'}, cpu {pkg.get('cpu') or 'any'}, not {platform} "
            f"({node_os}/{node_cpu}), and it is not optional (npm refuses it: EBADPLATFORM)"
        )
    # What a left-out optional package alone needed goes too: optional packages that nothing
    # installed reaches any more.
    reached: set[str] = set()
    todo = list(roots["deps"]) + (list(roots["dev_deps"]) if include_dev else [])
    while todo:
        path = todo.pop()
        if path in reached or path in dropped or path not in by_path:
            continue
        reached.add(path)
        todo.extend(by_path[path].get("deps") or [])
    selected = []
    for pkg in plan:
        if pkg["path"] in dropped:
            continue
        if pkg["path"] not in reached and (pkg["optional"] or pkg["dev_optional"]):
            continue
        selected.append(_Planned(pkg["path"], pkg["name"], pkg["tarball"], dict(pkg["bin"])))
    return selected


def _only_roots(plan: list[dict[str, Any]], roots: dict[str, list[str]], params: dict[str, Any],
                what: str) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """The plan and roots npm_layer `params` install from: the whole lock, or with `roots`
    (the lock paths of `deps`) only what they reach, each package at its place in the tree,
    dev or not (asked for by name)."""
    wanted = params.get("roots")
    if wanted is None:
        return plan, roots
    by_path = {p["path"]: p for p in plan}
    if not isinstance(wanted, list) or not all(isinstance(r, str) and r in by_path
                                                for r in wanted):
        raise UserInputError(f"{what}: roots must be lock paths of the layout, got {wanted!r}")
    reached: set[str] = set()
    todo = list(wanted)
    while todo:
        path = todo.pop()
        if path in reached or path not in by_path:
            continue
        reached.add(path)
        todo.extend(by_path[path].get("deps") or [])
    subset = [{**p, "dev": False, "optional": p["optional"] or p["dev_optional"],
               "dev_optional": False} for p in plan if p["path"] in reached]
    return subset, {"deps": sorted(wanted), "dev_deps": []}


def _file_mode(mode: int, executable: bool) -> int:
    """pacote's mode for an extracted file: the tarball's bits with 0666 added, npm's umask
    taken off, owner read/write, and +x for the package's bins."""
    return ((mode | 0o666) & ~_UMASK & 0o7777) | (0o111 if executable else 0) | 0o600


def _tarball_entries(tgz: Path, prefix: str, bins: set[str], scratch: Path,
                     what: str) -> Iterator[TarEntry]:
    """The files of one package tarball under `prefix`, its first path component stripped (as
    npm strips `package/`); links, devices and directories are not taken (npm makes no links
    from a tarball; directories get 0755 as npm's do). A path given twice: the last wins."""
    plain = Path(tempfile.mkstemp(dir=scratch, suffix=".tar")[1])
    try:
        with gzip.open(tgz, "rb") as src, open(plain, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (OSError, EOFError) as e:
        raise UserInputError(f"{what}: not a gzip tarball ({e})") from None
    found: dict[str, TarEntry] = {}
    try:
        with tarfile.open(plain, "r:") as tf:
            for m in tf:
                if not m.isreg():
                    continue
                rel = m.name.lstrip("./").split("/", 1)
                if len(rel) < 2 or not rel[1].strip("/"):
                    continue
                inner = normalize_path(rel[1], f"{what}: member {m.name!r}")
                found[inner] = TarEntry(
                    f"{prefix}/{inner}", "file",
                    mode=_file_mode(stat.S_IMODE(m.mode), inner in bins),
                    src=plain, offset=m.offset_data, size=m.size,
                )
    except tarfile.TarError as e:
        raise UserInputError(f"{what}: not a valid tarball: {e}") from None
    yield from found.values()


def _prefix(params: dict[str, Any], what: str) -> str:
    """The in-layer directory of the top node_modules (`path` without its leading slash)."""
    target = params.get("path")
    if not isinstance(target, str) or not target.startswith("/"):
        raise UserInputError(f"{what}: path must be an absolute path in the image, got {target!r}")
    return normalize_path(target.lstrip("/") or ".", f"{what}: path") if target.strip("/") else ""


def _place(prefix: str, lock_path: str) -> str:
    # node_modules/a/node_modules/b -> <path>/a/node_modules/b
    rest = lock_path[len("node_modules"):]
    return (prefix + rest) if prefix else rest.lstrip("/")


def installed_packages(layout_path: Path, layout: str, params: dict[str, Any],
                       what: str = "npm_layer") -> list[tuple[str, _Planned, dict[str, Any]]]:
    """What npm_layer `params` install from the npm_lock layout.json at `layout_path` (exec
    path `layout`): per package, its in-layer directory, its plan and its layout entry (the
    SBOM reads the same choice)."""
    prefix = _prefix(params, what)
    platform, libc = params.get("platform"), params.get("libc") or "glibc"
    if not isinstance(platform, str) or platform.count("/") not in (1, 2):
        raise UserInputError(f"{what}: platform must be like 'linux/amd64', got {platform!r}")
    try:
        data = json_input.loads(layout_path.read_text())
        plan, roots = data["packages"], data["root"]
    except (ValueError, KeyError, TypeError) as e:
        raise UserInputError(f"{what}: {layout} is not an npm_lock layout ({e})") from None
    plan, roots = _only_roots(plan, roots, params, what)
    by_path = {p["path"]: p for p in plan}
    return [(_place(prefix, pkg.path), pkg, by_path[pkg.path])
            for pkg in _select(plan, roots, platform, str(libc), bool(params.get("include_dev")),
                               what)]


def write_npm_layer_tar(call: BuiltinCall, params: dict[str, Any], out: ByteWriter,
                        scratch: Path, what: str = "npm_layer") -> None:
    """Write the canonical tar of the node_modules that npm_layer `params` describe to `out`
    (the one definition of those bytes)."""
    layout = params.get("layout")
    layout_path = input_path(call, layout, f"{what}: layout")
    assert isinstance(layout, str)
    base = posixpath.dirname(layout)
    packages = [pkg for _, pkg, _ in installed_packages(layout_path, layout, params, what)]
    prefix, mtime = _prefix(params, what), layer_mtime(params, what)

    def placed(lock_path: str) -> str:
        return _place(prefix, lock_path)

    entries: dict[str, tuple[str, TarEntry]] = {}

    def add(entry: TarEntry, owner: str) -> None:
        old = entries.get(entry.path)
        if old is not None:
            raise UserInputError(
                f"{what}: /{entry.path} is given by both {old[0]} and {owner} (name conflict)")
        entries[entry.path] = (owner, entry)

    for pkg in packages:
        call.check_cancelled()
        owner = f"'{pkg.path}' ({pkg.name})"
        if pkg.tarball is not None:
            tgz = input_path(call, f"{base}/{pkg.tarball}", f"{what}: tarball of {owner}")
            for entry in _tarball_entries(tgz, placed(pkg.path), set(pkg.bins.values()), scratch,
                                          f"{what}: {owner}"):
                add(entry, owner)
    for pkg in packages:
        if not pkg.bins:
            continue
        holder = pkg.path[: pkg.path.rindex("node_modules/") + len("node_modules")]
        for bin_name, file in sorted(pkg.bins.items()):
            if placed(f"{pkg.path}/{file}") not in entries:
                continue  # npm links only bins that exist
            link = f"{placed(holder)}/.bin/{bin_name}"
            owner = f"the bin '{bin_name}' of '{pkg.path}' ({pkg.name})"
            if link in entries:
                raise UserInputError(
                    f"{what}: /{link} is given by both {entries[link][0]} and {owner} "
                    "(name conflict)")
            add(TarEntry(link, "symlink", target=f"../{pkg.name}/{file}"), owner)
    write_tar(out, [e for _, e in entries.values()], mtime=mtime, uid=0, gid=0,
              check_cancelled=call.check_cancelled)


@builtin("npm_layer")
def npm_layer(call: BuiltinCall) -> None:
    """Write one uncompressed canonical layer tar of node_modules to the one output.

    params: {"layout": EXEC_PATH of an npm_lock's layout.json, "path": "/app/node_modules",
             "platform": "linux/amd64", "libc": "glibc" | "musl", "include_dev": bool,
             "mtime": int}
    The tarballs are inputs beside layout.json. Every package the lock's `packages` map lists
    for the platform is unpacked at its path (first component stripped, files 0644 or 0755 as
    npm makes them), bins linked in the `.bin` of the node_modules that holds the package
    (relative symlinks). No install script runs.
    """
    params = params_dict(call, NPM_LAYER_PARAMS, "npm_layer")
    write_tar_output(call, "npm_layer",
                     lambda sink, scratch: write_npm_layer_tar(call, params, sink, scratch))
