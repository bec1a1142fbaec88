"""`npm_lock`: a package-lock.json (v2/v3) read, checked against its package.json, and turned
into the materialized repository `@NAME` whose `:lock` target holds the layout plan and every
tarball, each pinned by the lock's own integrity (docs/external-inputs.md, docs/node.md).

The lock's `packages` map is the tree npm lays out: each key is a path (`node_modules/a`,
`node_modules/a/node_modules/b`, `node_modules/@s/x`). pyimg keeps that tree as it is; it does
not resolve versions again. What npm_layer needs is written to `layout.json` (the plan): for
each path, the package's name, version, tarball file, bins, os/cpu and dev/optional flags.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyimg.core import json_input
from pyimg.core.digest import canonical_json
from pyimg.core.sri import Sri, strongest_sri
from pyimg.errors import UserInputError
from pyimg.loading.module_file import NpmLock

__all__ = [
    "LAYOUT_FILE",
    "NpmPackage",
    "NpmTree",
    "auth_header",
    "check_lock",
    "npm_entry_covers",
    "npm_lock_entry",
    "read_npmrc",
    "write_npm_repo",
]

LAYOUT_FILE = "layout.json"
LAYOUT_VERSION = 1
_NAME = re.compile(r"^(@[A-Za-z0-9][A-Za-z0-9._~-]*/)?[A-Za-z0-9._~-][A-Za-z0-9._~-]*$")
_VERSION = re.compile(r"^[A-Za-z0-9.+_~-]+$")
_DEP_FIELDS = ("dependencies", "devDependencies", "optionalDependencies")


@dataclass(frozen=True)
class NpmPackage:
    """One entry of the lock's `packages` map, as the layout needs it."""

    path: str  # node_modules/a/node_modules/@s/b
    name: str  # the name it is installed under (the last node_modules/ segment of `path`)
    version: str
    url: str | None  # None for a bundled dependency (its files come in its parent's tarball)
    integrity: Sri | None
    bin: tuple[tuple[str, str], ...] = ()
    os: tuple[str, ...] = ()
    cpu: tuple[str, ...] = ()
    dev: bool = False
    optional: bool = False
    dev_optional: bool = False
    has_install_script: bool = False
    libc: tuple[str, ...] = ()
    deps: tuple[str, ...] = ()  # the paths its dependencies resolve to (node's resolution)

    def tarball(self) -> str | None:
        """The repository-relative file of its tarball (shared by entries of equal integrity)."""
        if self.integrity is None:
            return None
        return f"tarballs/{self.integrity.algorithm}-{self.integrity.hex}.tgz"

    def plan(self) -> dict[str, Any]:
        return {
            "path": self.path, "name": self.name, "version": self.version,
            "tarball": self.tarball(), "bin": dict(self.bin), "os": list(self.os),
            "cpu": list(self.cpu), "dev": self.dev, "optional": self.optional,
            "dev_optional": self.dev_optional, "has_install_script": self.has_install_script,
            "libc": list(self.libc), "deps": list(self.deps),
        }


@dataclass(frozen=True)
class NpmTree:
    """A checked lock: its packages by path, and the paths the root's dependencies reach."""

    packages: tuple[NpmPackage, ...]
    root_deps: tuple[str, ...]
    root_dev_deps: tuple[str, ...]


def _name_from_path(path: str) -> str:
    return path.rsplit("node_modules/", 1)[-1]


def _parent(path: str) -> str:
    """The package whose node_modules holds `path` ("" for the root)."""
    head = path.rsplit("/node_modules/", 1)
    return head[0] if len(head) == 2 else ""


def _find_dependency(packages: dict[str, Any], from_path: str, name: str) -> str | None:
    """Where node's resolution finds `name` from the package at `from_path`: its own
    node_modules, then each ancestor's, up to the root's."""
    here = from_path
    while True:
        candidate = f"{here}/node_modules/{name}" if here else f"node_modules/{name}"
        if candidate in packages:
            return candidate
        if not here:
            return None
        here = _parent(here)


def _str_list(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


def check_lock(decl: NpmLock, lock_data: bytes, package_json: bytes) -> NpmTree:
    """The packages of the lock, every one pinned by integrity; a lock npm would not install
    from (v1, out of date with package.json, an entry missing, an unpinned tarball, a workspace
    link) is refused naming the file and the package."""
    lock_file, json_file = decl.lock, decl.package_json

    def bad(message: str) -> UserInputError:
        return UserInputError(f"npm_lock '{decl.name}': {message}", origin=decl.origin)

    lock = _load(lock_data, lock_file, bad)
    manifest = _load(package_json, json_file, bad)
    version = lock.get("lockfileVersion")
    packages = lock.get("packages")
    if version not in (2, 3) or not isinstance(packages, dict):
        raise bad(
            f"{lock_file}: lockfileVersion {version!r} has no 'packages' map; pyimg reads "
            "lockfile v2 and v3 (written by npm 7 and later: run `npm install "
            "--lockfile-version 3`)"
        )
    root = packages.get("")
    if not isinstance(root, dict):
        raise bad(f"{lock_file}: 'packages' has no root entry \"\"")
    for field in _DEP_FIELDS:
        want = manifest.get(field) or {}
        have = root.get(field) or {}
        if not isinstance(want, dict) or not isinstance(have, dict):
            raise bad(f"{json_file}: '{field}' must be an object")
        for dep in sorted(set(want) | set(have)):
            if want.get(dep) != have.get(dep):
                said = f"{want[dep]!r}" if dep in want else "nothing"
                locked = f"{have[dep]!r}" if dep in have else "nothing"
                raise bad(
                    f"{lock_file} is out of date with {json_file}: {field} of '{dep}' is "
                    f"{said} in {json_file} but {locked} in the lock; run `npm install` to "
                    "update the lock, then `pyimg lock`"
                )
    _refuse_links(packages, lock_file, bad)
    result: list[NpmPackage] = []
    for path in sorted(packages):
        if path == "":
            continue
        entry = packages[path]
        what = f"{lock_file}: package '{path}'"
        if not isinstance(entry, dict):
            raise bad(f"{what}: the entry is not an object")
        name = _name_from_path(path)
        if not _NAME.match(name) or ".." in path.split("/") or "//" in path:
            raise bad(f"{what}: {name!r} is not a valid package name")
        pkg_version = entry.get("version")
        if not isinstance(pkg_version, str) or not _VERSION.match(pkg_version):
            raise bad(f"{what}: no valid 'version' (got {pkg_version!r})")
        bundled = bool(entry.get("inBundle"))
        url: str | None = None
        sri: Sri | None = None
        if not bundled:
            integrity = entry.get("integrity")
            if not isinstance(integrity, str):
                raise bad(
                    f"{what} ({name}@{pkg_version}) has no 'integrity': the lock cannot pin its "
                    "tarball (regenerate it with `npm install` against a registry that serves "
                    "integrity)"
                )
            try:
                sri = strongest_sri(integrity)
            except ValueError as e:
                raise bad(f"{what}: 'integrity' {e}") from None
            url = _tarball_url(decl, name, pkg_version, entry.get("resolved"), entry.get("name"),
                               what, bad)
        bins = entry.get("bin") or {}
        if not isinstance(bins, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in bins.items()
        ):
            raise bad(f"{what}: 'bin' must map names to files, got {bins!r}")
        for bin_name, target in bins.items():
            if not bin_name or "/" in bin_name or bin_name in (".", ".."):
                raise bad(f"{what}: bin name {bin_name!r} is not a file name")
            parts = [p for p in target.split("/") if p not in ("", ".")]
            if not parts or ".." in parts or target.startswith("/"):
                raise bad(f"{what}: bin {bin_name!r} points outside the package ({target!r})")
        oses, cpus = _str_list(entry.get("os", [])), _str_list(entry.get("cpu", []))
        libcs = _str_list(entry.get("libc", []))
        if oses is None or cpus is None or libcs is None:
            raise bad(f"{what}: 'os', 'cpu' and 'libc' must be lists of strings")
        result.append(NpmPackage(
            path, name, pkg_version, url, sri,
            tuple(sorted((k, "/".join(p for p in v.split("/") if p not in ("", ".")))
                         for k, v in bins.items())),
            oses, cpus, bool(entry.get("dev")), bool(entry.get("optional")),
            bool(entry.get("devOptional")), bool(entry.get("hasInstallScript")), libcs,
            _edges(packages, path, entry, ("dependencies", "optionalDependencies",
                                           "peerDependencies")),
        ))
    _check_complete(packages, lock_file, bad)
    return NpmTree(
        tuple(result),
        _edges(packages, "", root, ("dependencies", "optionalDependencies", "peerDependencies")),
        _edges(packages, "", root, ("devDependencies",)),
    )


def _refuse_links(packages: dict[str, Any], lock_file: str,
                  bad: Callable[[str], UserInputError]) -> None:
    """Refuse what npm links instead of unpacking: the packages of npm workspaces and `file:`
    directories. npm installs each as a symlink into the sources beside the lock (and their
    own dependencies under those sources), so a layer of node_modules would hold links that
    dangle in the image and files no integrity pins."""
    links = {path: entry for path, entry in packages.items()
             if isinstance(entry, dict) and entry.get("link")}
    local = sorted(path for path in packages if path and (
        not path.startswith("node_modules/") or "/node_modules/./" in path))
    if not links and not local:
        return
    if links:
        path = sorted(links)[0]
        target = links[path].get("resolved") or "?"
        what = f"package '{path}' is a link to the local directory '{target}'"
    else:
        what = f"package '{local[0]}' is a local directory, not a node_modules entry"
    raise bad(
        f"{lock_file}: {what} (an npm workspace or a `file:` dependency): pyimg installs only "
        "registry tarballs pinned by integrity, and npm lays this one out as a symlink to your "
        "sources, which a node_modules layer would leave dangling; depend on a published "
        "version of it instead (a private registry works: `registry` and .npmrc), with the "
        "service's own package.json and package-lock.json outside the npm workspace "
        "(docs/node.md#npm-workspaces)"
    )


def _edges(packages: dict[str, Any], path: str, entry: dict[str, Any],
           fields: tuple[str, ...]) -> tuple[str, ...]:
    """The paths the package's dependencies of `fields` resolve to (absent ones left out)."""
    found = set()
    for field in fields:
        deps = entry.get(field) or {}
        for dep in deps if isinstance(deps, dict) else ():
            where = _find_dependency(packages, path, dep)
            if where is not None:
                found.add(where)
    return tuple(sorted(found))


def _check_complete(packages: dict[str, Any], lock_file: str,
                    bad: Callable[[str], UserInputError]) -> None:
    """Every dependency a package declares is found by node's resolution (optional and peer
    dependencies may be absent, as npm leaves them)."""
    for path in sorted(packages):
        entry = packages[path]
        fields = ("dependencies", "devDependencies") if path == "" else ("dependencies",)
        for field in fields:
            deps = entry.get(field) or {}
            if not isinstance(deps, dict):
                raise bad(f"{lock_file}: package '{path or '(root)'}': '{field}' must be an object")
            optional = entry.get("optionalDependencies") or {}
            for dep in sorted(deps):
                if dep in optional or _find_dependency(packages, path, dep) is not None:
                    continue
                raise bad(
                    f"{lock_file}: package '{path or '(root)'}' depends on '{dep}', which has "
                    "no entry in the lock's 'packages' (the lock is incomplete or out of date: "
                    "run `npm install`)"
                )


def _load(data: bytes, file: str, bad: Callable[[str], UserInputError]) -> dict[str, Any]:
    try:
        value = json_input.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise bad(f"{file} is not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise bad(f"{file} is not a JSON object")
    return value


def _tarball_url(decl: NpmLock, name: str, version: str, resolved: Any, real_name: Any,
                 what: str, bad: Callable[[str], UserInputError]) -> str:
    """The lock's `resolved` URL; a lock without one (npm omits it with some settings) gets the
    registry's conventional path. The public registry's URLs are moved to a declared mirror."""
    if resolved is None:
        pkg = real_name if isinstance(real_name, str) else name
        base = pkg.rsplit("/", 1)[-1]
        return f"{decl.registry}/{pkg}/-/{base}-{version}.tgz"
    if not isinstance(resolved, str) or not resolved.startswith(("https://", "http://")):
        raise bad(
            f"{what}: 'resolved' {resolved!r} is not a registry tarball (git, file: and "
            "directory dependencies are not supported)"
        )
    public = "https://registry.npmjs.org/"
    if resolved.startswith(public) and decl.registry + "/" != public:
        return decl.registry + "/" + resolved[len(public):]
    return resolved


# -- the lock entry -------------------------------------------------------------------------


def npm_lock_entry(decl: NpmLock, lock_data: bytes, package_json: bytes) -> dict[str, Any]:
    """pyimg.lock's entry: the package-lock.json the build is pinned to, by sha256 (the lock's
    integrities pin every tarball, so nothing else needs recording)."""
    packages = check_lock(decl, lock_data, package_json).packages
    sha = hashlib.sha256(lock_data).hexdigest()
    return {"digest": f"sha256:{sha}", "kind": decl.kind, "lock": decl.lock,
            "packages": len(packages)}


def npm_entry_covers(decl: NpmLock, entry: dict[str, Any], lock_data: bytes | None) -> bool:
    return (
        entry.get("lock") == decl.lock
        and lock_data is not None
        and entry.get("digest") == "sha256:" + hashlib.sha256(lock_data).hexdigest()
    )


# -- credentials ----------------------------------------------------------------------------


def read_npmrc(texts: list[str], env: dict[str, str]) -> dict[str, str]:
    """The `//host/path/:_authToken` and `:_auth` settings of .npmrc files (later files win),
    with `${VAR}` expanded from `env`, as npm reads them."""
    found: dict[str, str] = {}
    for text in texts:
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line[0] in "#;" or "=" not in line:
                continue
            key, _, value = (p.strip() for p in line.partition("="))
            if not key.startswith("//") or not key.endswith((":_authToken", ":_auth")):
                continue
            value = re.sub(r"\$\{([A-Za-z0-9_]+)\}", lambda m: env.get(m.group(1), ""),
                           value.strip('"'))
            found[key] = value
    return found


def auth_header(url: str, settings: dict[str, str]) -> str | None:
    """The Authorization header npm would send for `url`: the setting of the longest
    `//host[:port]/path/` that prefixes it (a token before basic credentials)."""
    parts = urllib.parse.urlsplit(url)
    dirs = [d for d in parts.path.split("/")[:-1] if d]
    for n in range(len(dirs), -1, -1):
        prefix = "//" + parts.netloc + "/" + "".join(d + "/" for d in dirs[:n])
        if settings.get(prefix + ":_authToken"):
            return f"Bearer {settings[prefix + ':_authToken']}"
        if settings.get(prefix + ":_auth"):
            return f"Basic {settings[prefix + ':_auth']}"
    return None


def npmrc_texts(workspace: Path, decl: NpmLock, env: dict[str, str]) -> list[str]:
    """The user's ~/.npmrc (or $NPM_CONFIG_USERCONFIG), then the declaration's `npmrc` (or the
    .npmrc beside package.json): the project's settings win, as in npm."""
    paths = [Path(env.get("NPM_CONFIG_USERCONFIG") or Path(env.get("HOME", "/")) / ".npmrc")]
    beside = decl.package_json.rpartition("/")[0]
    paths.append(workspace / (decl.npmrc or (f"{beside}/.npmrc" if beside else ".npmrc")))
    texts = []
    for path in paths:
        try:
            texts.append(path.read_text(errors="replace"))
        except OSError:
            continue
    return texts


# -- the materialized repository ------------------------------------------------------------


# Direct dependencies whose target directory would clash with the repository's own files.
_RESERVED_TARGETS = {"tarballs", LAYOUT_FILE, "BUILD.pyimg"}


def _closure(roots: list[str], by_path: dict[str, NpmPackage]) -> list[NpmPackage]:
    """The packages `roots` (lock paths) reach through their dependencies, on any platform."""
    seen: dict[str, NpmPackage] = {}
    todo = list(roots)
    while todo:
        path = todo.pop()
        if path in seen or path not in by_path:
            continue
        seen[path] = by_path[path]
        todo.extend(by_path[path].deps)
    return [seen[p] for p in sorted(seen)]


def write_npm_repo(decl: NpmLock, tree: NpmTree, tmp: Path,
               link: Callable[[NpmPackage, Path], None]) -> None:
    """`layout.json` (the plan npm_layer reads), `tarballs/<algorithm>-<hex>.tgz` for every
    pinned tarball, BUILD.pyimg with `:lock` (both) and `:layout`, and a package per direct
    dependency of package.json, `@NAME//express` or `@NAME//@scope/name`, whose `npm_package`
    holds layout.json and the tarballs of the dependency's transitive set."""
    tarballs: dict[str, NpmPackage] = {}
    for pkg in tree.packages:
        file = pkg.tarball()
        if file is not None and file not in tarballs:
            tarballs[file] = pkg
            link(pkg, tmp / file)
    plan = {
        "packages": [p.plan() for p in tree.packages],
        "root": {"deps": list(tree.root_deps), "dev_deps": list(tree.root_dev_deps)},
        "version": LAYOUT_VERSION,
    }
    (tmp / LAYOUT_FILE).write_bytes(canonical_json(plan))
    doc = f'"""Generated by pyimg from {decl.origin}: npm_lock(name = "{decl.name}")."""\n\n'
    everything = [LAYOUT_FILE, *sorted(tarballs)]
    (tmp / "BUILD.pyimg").write_text(
        doc
        + f"exports_files({json.dumps(everything)})\n"
        + f'filegroup(name = "layout", srcs = [{json.dumps(LAYOUT_FILE)}])\n'
        + f"filegroup(name = \"lock\", srcs = {json.dumps(everything)})\n"
    )
    by_path = {p.path: p for p in tree.packages}
    for path in sorted({*tree.root_deps, *tree.root_dev_deps}):
        name = _name_from_path(path)
        if name in _RESERVED_TARGETS:
            continue  # only `@NAME//:lock` installs a package called so
        files = sorted({f for p in _closure([path], by_path) if (f := p.tarball()) is not None})
        srcs = ["//:" + f for f in [LAYOUT_FILE, *files]]
        (tmp / name).mkdir(parents=True, exist_ok=True)
        (tmp / name / "BUILD.pyimg").write_text(
            doc + 'load("@pyimg//rules/private:node.bzl", "npm_package")\n\n'
            f"npm_package(name = {json.dumps(name.rsplit('/', 1)[-1])}, "
            f"srcs = {json.dumps(srcs)}, roots = {json.dumps([path])})\n"
        )


def environment() -> dict[str, str]:
    """The variables .npmrc files may name (read only when downloading)."""
    return dict(os.environ)
