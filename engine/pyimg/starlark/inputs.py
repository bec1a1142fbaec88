"""The inputs of loading: finding BUILD files and packages, glob(), and the record of what loading
read with the check that it is unchanged. No Starlark here: validating a persisted cache (query,
analysis) must not start the interpreter.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyimg.core.file_digests import FileDigestCache
    from pyimg.starlark.labels import Pattern
    from pyimg.starlark.loading import Loader

__all__ = [
    "BUILD_FILE_NAMES",
    "find_build_file",
    "find_packages",
    "glob_package",
    "inputs_valid",
    "loading_inputs",
]

BUILD_FILE_NAMES = ("BUILD.pyimg", "BUILD")
IGNORED_DIRS = {"pyimg-out", ".git", ".hg", ".svn", "node_modules"}


def find_build_file(root: str | Path, package: str) -> str | None:
    """The path of the BUILD file of `package` in the repository at `root`; None: no package."""
    # Strings, not pathlib: validating a persisted graph asks this for every package.
    d = os.path.join(root, package) if package else str(root)
    for name in BUILD_FILE_NAMES:
        path = os.path.join(d, name)
        if os.path.isfile(path):
            return path
    return None


def find_packages(
    workspace: Path, under: str = "", files: dict[str, set[str]] | None = None
) -> list[str]:
    """The packages at or below `under`, sorted; never descends into pyimg-out, dot directories
    or directory symlinks. `files`, when given, receives the names of the files (what
    `os.path.isfile` accepts) of each directory listed, keyed by its workspace-relative path."""
    found = []
    stack = [under]
    while stack:
        rel = stack.pop()
        try:
            entries = list(os.scandir(os.path.join(workspace, rel)))
        except OSError:
            continue
        # DirEntry answers from the directory listing: no stat per entry, unlike os.path.
        if files is not None:
            files[rel] = {e.name for e in entries if e.is_file()}
        if any(e.name in BUILD_FILE_NAMES and e.is_file() for e in entries):
            found.append(rel)
        stack.extend(
            f"{rel}/{e.name}" if rel else e.name
            for e in entries
            if e.name not in IGNORED_DIRS
            and not e.name.startswith(".")
            and e.is_dir(follow_symlinks=False)
        )
    return sorted(found)


# -- what loading read -------------------------------------------------------------------------


def _digest_or_absent(digests: FileDigestCache, path: str | Path) -> str:
    try:
        return digests.digest(path)[0].hex
    except FileNotFoundError:
        return ""


def loading_inputs(
    loader: Loader,
    patterns: Sequence[Pattern],
    digests: FileDigestCache,
    extra_files: Sequence[Path] = (),
) -> dict[str, Any]:
    """What loading so far depended on, in the form `inputs_valid` checks.

    `extra_files` (MODULE.pyimg, pyimg.lock) are recorded absent or not: they decide what the
    external repositories hold.
    """
    files = {
        name: [str(loader.read_paths[name]), digest]
        for name, digest in sorted(loader.read_files.items())
    }
    for path in extra_files:
        files[str(path)] = [str(path), _digest_or_absent(digests, path)]
    return {
        "files": files,
        "globs": [[g[0], list(g[1]), list(g[2]), list(g[3])] for g in loader.globs],
        "packages": {
            str(p): list(loader.iter_packages(p.package)) for p in patterns if p.recursive
        },
        # Workspace packages only: an external repository's BUILD file is generated, and its
        # digest (in "files") already covers it.
        "build_files": {
            name: str(pkg.build_file)
            for name, pkg in sorted(loader.packages.items())
            if not pkg.repo
        },
    }


def inputs_valid(
    inputs: dict[str, Any], patterns: Sequence[Pattern], workspace: Path, digests: FileDigestCache
) -> bool:
    """Whether loading would read the same now: every file read has the same digest (through the
    stat-keyed digest cache), every package has the same BUILD file, every recursive pattern
    matches the same packages and every glob() returns the same files. Raises KeyError, TypeError
    or ValueError on a malformed `inputs`."""
    for path, digest in inputs["files"].values():
        try:
            if _digest_or_absent(digests, path) != digest:
                return False
        except OSError:
            return False
    for name, recorded in inputs["build_files"].items():
        if find_build_file(workspace, name) != recorded:
            return False
    for pattern in patterns:
        if pattern.recursive:
            if find_packages(workspace, pattern.package) != inputs["packages"].get(str(pattern)):
                return False

    def build_file(package: str) -> str | None:
        return find_build_file(workspace, package)

    for package, include, exclude, result in inputs["globs"]:
        if glob_package(workspace, package, include, exclude, build_file) != result:
            return False
    return True


# -- glob --------------------------------------------------------------------------------------


def _glob_regex(pattern: str) -> re.Pattern[str]:
    parts = []
    segments = pattern.split("/")
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == "**":
            parts.append("(?:.*/)?" if not last else ".*")
            continue
        parts.append(_segment_regex(seg))
        if not last:
            parts.append("/")
    return re.compile("^" + "".join(parts) + "$")


def _segment_regex(seg: str) -> str:
    out = []
    for ch in seg:
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        else:
            out.append(re.escape(ch))
    return "".join(out)


def glob_package(
    workspace: Path,
    package: str,
    include: list[str],
    exclude: list[str],
    build_file: Callable[[str], str | Path | None],
) -> list[str]:
    """Files of `package` matching `include` but not `exclude`, relative to the package, sorted.

    Never descends into a subpackage (a directory with its own BUILD file) or pyimg-out. Walks
    only below each pattern's literal directory prefix (`assets/**` never lists `src/`): globs
    are re-run to validate the persisted analysis, so their cost is part of every no-op build.
    """
    root = workspace / package
    inc = [_glob_regex(p) for p in include]
    exc = [_glob_regex(p) for p in exclude]
    matches = []
    for base in _walk_roots(include):
        if not _enterable(package, base, build_file):
            continue
        for dirpath, dirnames, filenames in os.walk(root / base if base else root):
            rel_dir = Path(dirpath).relative_to(root).as_posix()
            rel_dir = "" if rel_dir == "." else rel_dir
            keep = []
            for d in sorted(dirnames):
                sub_pkg = "/".join(p for p in (package, rel_dir, d) if p)
                if d in IGNORED_DIRS or d.startswith(".") or build_file(sub_pkg) is not None:
                    continue
                keep.append(d)
            dirnames[:] = keep
            for f in filenames:
                rel = f"{rel_dir}/{f}" if rel_dir else f
                if rel in BUILD_FILE_NAMES:
                    continue
                if any(r.match(rel) for r in inc) and not any(r.match(rel) for r in exc):
                    matches.append(rel)
    return sorted(matches)


def _walk_roots(include: list[str]) -> list[str]:
    """The directories to walk: each pattern's leading literal directories, nested ones dropped."""
    bases = set()
    for pattern in include:
        literal = []
        for part in pattern.split("/")[:-1]:
            if any(c in part for c in "*?["):
                break
            literal.append(part)
        bases.add("/".join(literal))
    roots: list[str] = []
    for b in sorted(bases):
        if not any(r == "" or b == r or b.startswith(r + "/") for r in roots):
            roots.append(b)
    return roots


def _enterable(package: str, base: str, build_file: Callable[[str], str | Path | None]) -> bool:
    """Whether `base` (below `package`) is a directory of the package itself."""
    rel = ""
    for part in base.split("/") if base else []:
        rel = f"{rel}/{part}" if rel else part
        if part in IGNORED_DIRS or part.startswith(".") or part in ("", ".", ".."):
            return False
        if build_file("/".join(p for p in (package, rel) if p)) is not None:
            return False
    return True
