"""Whether a path below a root stays inside it once its symlinks are followed, and if not, why.

Sources must not reach outside the workspace: a symlink `p/c.json -> ~/.docker/config.json` would
otherwise pack the user's credentials into a layer. A symlink that resolves inside the root is
fine (sources are read through it, as Bazel does); one that leaves the root, dangles or loops is a
`LinkProblem`. Only symlinks cost more than a stat: the real path of each directory is computed
once per `Confinement` and remembered, so checking thousands of sources stays cheap.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Confinement", "LinkProblem"]

OUTSIDE = "outside"
DANGLING = "dangling"
LOOP = "loop"


@dataclass(frozen=True)
class LinkProblem:
    """Why `path` (relative to the root) is not a source: the symlink `link` on its way (the path
    itself, or a directory it goes through) says `target`, which resolves to `resolved`."""

    path: str
    link: str
    target: str
    resolved: str
    kind: str  # OUTSIDE, DANGLING or LOOP

    def __str__(self) -> str:
        where = f"'{self.link}'" if self.link == self.path else (
            f"'{self.path}' goes through '{self.link}', which")
        if self.kind == OUTSIDE:
            resolved = f" (resolved: '{self.resolved}')" if self.resolved != self.target else ""
            return (f"{where} is a symlink to '{self.target}'{resolved}, outside the workspace: "
                    "sources must stay inside the workspace (copy the file in instead)")
        if self.kind == DANGLING:
            return (f"{where} is a symlink to '{self.target}', which does not exist "
                    "(a dangling symlink)")
        return f"{where} is a symlink to '{self.target}', which never resolves (a symlink loop)"


class Confinement:
    """Checks paths below one root. Safe to share between threads (the memo only ever gains
    entries that every thread would compute alike)."""

    def __init__(self, root: str | Path) -> None:
        self.root = os.path.realpath(root)
        # Directory relative to the root -> its real path, or the problem on the way to it.
        self._dirs: dict[str, str | LinkProblem] = {"": self.root}

    def check(self, rel: str) -> LinkProblem | None:
        """The problem with the file or directory `rel` (a normalized relative path, no `..`);
        None when it stays inside the root or does not exist at all (the caller reports that)."""
        parent, _, name = rel.rpartition("/")
        real_parent = self._dir(parent)
        if isinstance(real_parent, LinkProblem):
            return LinkProblem(rel, real_parent.link, real_parent.target, real_parent.resolved,
                               real_parent.kind)
        found = self._follow(rel, os.path.join(real_parent, name))
        return found if isinstance(found, LinkProblem) else None

    def real_dir(self, rel: str) -> str | LinkProblem:
        """The real path of directory `rel`, or the problem on the way to it."""
        return self._dir(rel)

    def _dir(self, rel: str) -> str | LinkProblem:
        hit = self._dirs.get(rel)
        if hit is not None:
            return hit
        parent, _, name = rel.rpartition("/")
        real_parent = self._dir(parent)
        if isinstance(real_parent, LinkProblem):
            found: str | LinkProblem = real_parent
        else:
            found = self._follow(rel, os.path.join(real_parent, name))
        self._dirs[rel] = found
        return found

    def _follow(self, rel: str, path: str) -> str | LinkProblem:
        """`path` (whose parent is a real path) resolved: itself unless it is a symlink."""
        try:
            if not os.path.islink(path):
                return path
            target = os.readlink(path)
        except OSError:
            return path  # gone meanwhile: not a link problem
        resolved = os.path.realpath(path)
        if not self.inside(resolved):
            return LinkProblem(rel, rel, target, resolved, OUTSIDE)
        try:
            os.stat(path)
        except OSError as e:
            kind = LOOP if e.errno == errno.ELOOP else DANGLING
            return LinkProblem(rel, rel, target, resolved, kind)
        return resolved

    def inside(self, real: str) -> bool:
        return real == self.root or real.startswith(self.root.rstrip("/") + "/")
