"""The inputs of loading: finding BUILD files and packages, glob(), and the record of what loading
read with the check that it is unchanged. No Starlark here: validating a persisted cache (query,
analysis) must not start the interpreter.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyimg.core.confinement import Confinement, LinkProblem
from pyimg.core.workspace import MODULE_FILE
from pyimg.errors import SourceLinkError, UserInputError
from pyimg.labels import is_utf8_name, name_problem

if TYPE_CHECKING:
    from pyimg.core.file_digests import FileDigestCache
    from pyimg.labels import Pattern

__all__ = [
    "BUILD_FILE_NAMES",
    "LoadingRecord",
    "find_build_file",
    "find_packages",
    "glob_package",
    "inputs_valid",
    "loading_inputs",
    "sources_confined",
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
    """The packages at or below `under`, sorted; never descends into pyimg-out, dot directories,
    directory symlinks or a nested workspace (a directory below `under` holding its own
    MODULE.pyimg, as examples/debian-python inside examples/: its packages are its own). `files`, when given, receives the names of the files (what
    `os.path.isfile` accepts) of each directory listed, keyed by its workspace-relative path."""
    found = []
    stack = [under]
    while stack:
        rel = stack.pop()
        try:
            entries = list(os.scandir(os.path.join(workspace, rel)))
        except OSError:
            continue
        if rel != under and any(e.name == MODULE_FILE for e in entries):
            continue  # another workspace: its BUILD files name its own external repositories
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


@dataclass(frozen=True)
class LoadingRecord:
    """What one loading read, as a value (the loader makes it with `Loader.loading_record`), so
    that checking a persisted cache needs neither the loader nor the Starlark interpreter."""

    files: tuple[tuple[str, str, str], ...]  # (display name, path on disk, sha256), by name
    globs: tuple[tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...]
    packages: tuple[tuple[str, tuple[str, ...]], ...]  # recursive pattern -> packages it matched
    # Workspace packages only: an external repository's BUILD file is generated, and its digest
    # (in `files`) already covers it.
    build_files: tuple[tuple[str, str], ...]  # package -> its BUILD file, by package


def loading_inputs(
    record: LoadingRecord,
    digests: FileDigestCache,
    extra_files: Sequence[Path] = (),
) -> dict[str, Any]:
    """What loading so far depended on, in the form `inputs_valid` checks.

    `extra_files` (MODULE.pyimg, pyimg.lock) are recorded absent or not: they decide what the
    external repositories hold.
    """
    files = {name: [path, digest] for name, path, digest in record.files}
    for path in extra_files:
        files[str(path)] = [str(path), _digest_or_absent(digests, path)]
    return {
        "files": files,
        "globs": [[g[0], list(g[1]), list(g[2]), list(g[3])] for g in record.globs],
        "packages": {pattern: list(packages) for pattern, packages in record.packages},
        "build_files": dict(record.build_files),
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

    confinement = Confinement(workspace)
    try:
        for package, include, exclude, result in inputs["globs"]:
            if glob_package(workspace, package, include, exclude, build_file,
                            confinement) != result:
                return False
    except UserInputError:
        # A link leaving the workspace, or a name glob() refuses: loading runs again and
        # reports it at the glob() call.
        return False
    return True


def sources_confined(workspace: Path, sources: Sequence[str]) -> bool:
    """Whether every source file (workspace-relative) still resolves inside the workspace: a
    symlink re-pointed outside since loading checked it is reported by loading it again."""
    confinement = Confinement(workspace)
    return all(confinement.check(rel) is None for rel in sources)


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
    # DOTALL: `**` must match a name with a newline too (then refused by name, not skipped).
    return re.compile("^" + "".join(parts) + r"\Z", re.DOTALL)


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
    confinement: Confinement | None = None,
) -> list[str]:
    """Files of `package` matching `include` but not `exclude`, relative to the package, sorted.

    Never descends into a subpackage (a directory with its own BUILD file) or pyimg-out. Walks
    only below each pattern's literal directory prefix (`assets/**` never lists `src/`), and only
    into directories a pattern can match below: globs are re-run to validate the persisted
    analysis, so their cost is part of every no-op build.

    Symlinks are followed as in Bazel, directories too, but only while they stay inside the
    workspace: a matched symlink or a walked directory that leaves it, dangles or loops raises
    `SourceLinkError` (a directory that links to one of its own parents is a loop). A link
    into pyimg-out or a dot directory is not walked, as those are not walked by name.
    """
    confinement = confinement or Confinement(workspace)
    inc = [_glob_regex(p) for p in include]
    exc = [_glob_regex(p) for p in exclude]
    patterns = [p.split("/") for p in include]
    matches = []
    for base in _walk_roots(include):
        if not _enterable(package, base, build_file):
            continue
        start = _join(package, base)
        real = confinement.real_dir(start)
        if isinstance(real, LinkProblem):
            raise SourceLinkError(str(real))
        # (directory relative to the package, its real path, the real paths of its parents)
        stack = [(base, real, frozenset([real]))]
        while stack:
            rel_dir, real_dir, seen = stack.pop()
            try:
                entries = list(os.scandir(real_dir))
            except OSError:
                continue
            for e in entries:
                rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
                if _is_dir(e):  # follows a symlink: a directory through a link is walked too
                    if (e.name in IGNORED_DIRS or e.name.startswith(".")
                            or not _may_match_below(rel, patterns)
                            or build_file(_join(package, rel)) is not None):
                        continue
                    sub = e.path
                    if e.is_symlink():
                        found = confinement.real_dir(_join(package, rel))
                        if isinstance(found, LinkProblem):
                            raise SourceLinkError(str(found))
                        if found in seen:
                            raise SourceLinkError(
                                f"'{_join(package, rel)}' is a symlink to "
                                f"'{os.readlink(e.path)}', a directory that contains it "
                                "(a symlink loop)")
                        if _ignored(os.path.relpath(found, confinement.root)):
                            # Never reached by name either (and the no-op record does not
                            # watch those directories).
                            continue
                        sub = found
                    stack.append((rel, sub, seen | {sub}))
                    continue
                if rel in BUILD_FILE_NAMES:
                    continue
                if any(r.match(rel) for r in inc) and not any(r.match(rel) for r in exc):
                    _check_file_name(package, rel)
                    if e.is_symlink():
                        problem = confinement.check(_join(package, rel))
                        if problem is not None:
                            raise SourceLinkError(str(problem))
                    matches.append(rel)
    return sorted(matches)


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False  # a symlink loop: reported if a pattern matches it


def _ignored(rel: str) -> bool:
    """Whether a workspace-relative directory ("." is the root) lies in one never walked."""
    return rel != "." and any(
        part in IGNORED_DIRS or part.startswith(".") for part in rel.split("/"))


def _join(package: str, rel: str) -> str:
    return f"{package}/{rel}" if package and rel else package or rel


def _may_match_below(rel_dir: str, patterns: list[list[str]]) -> bool:
    """Whether some pattern (split at "/") can match a file below directory `rel_dir`."""
    parts = rel_dir.split("/")
    return any(_starts_match(parts, pattern) for pattern in patterns)


def _starts_match(parts: list[str], pattern: list[str]) -> bool:
    for i, part in enumerate(parts):
        if i >= len(pattern) - 1:
            # Only the file's own segment is left, unless it is "**" (any depth).
            return i < len(pattern) and pattern[i] == "**"
        if pattern[i] == "**":
            return True
        if not re.match(_segment_regex(pattern[i]) + r"\Z", part):
            return False
    return True


def _check_file_name(package: str, rel: str) -> None:
    """Refuse a matched file whose path is not valid UTF-8 (Starlark strings are UTF-8, so no
    label could name it) or holds a control character; the error names the directory and shows
    the offending name's bytes escaped."""
    parts = rel.split("/")
    for i, part in enumerate(parts):
        if not is_utf8_name(part):
            where = "/".join([*filter(None, [package]), *parts[:i]]) or "."
            raise UserInputError(
                f"the name {repr(os.fsencode(part))[1:]} in directory {where} is not "
                f"valid UTF-8; pyimg packs only UTF-8 file names (rename it, or leave it out "
                f"with glob's exclude)"
            )
    problem = name_problem(rel)
    if problem:
        where = "/".join(p for p in (package, rel.rpartition("/")[0]) if p) or "."
        raise UserInputError(
            f"a file in directory {where} cannot be a source: {problem} (rename it, or leave it "
            f"out with glob's exclude)"
        )


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
