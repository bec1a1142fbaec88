"""Persists each loaded workspace package on its own, so that a build after a BUILD-file edit
evaluates only the packages whose inputs changed (docs/architecture.md, "How a build runs").

A package's record holds its targets, the rule classes they use, and what its evaluation read: its
BUILD file and every .bzl file that file loaded, directly or not (with their digests), and each
glob() with its result. It is served while all of those are the same: the files through the
stat-keyed digest cache, the globs run again. Records are one file per package, so an edit
costs the evaluation and the write of the packages it touches, not of the workspace. A record
is written without fsync: a torn one does not parse and counts as absent.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pyimg import __version__
from pyimg.core.file_digests import FileDigestCache
from pyimg.errors import UserInputError
from pyimg.labels import Label
from pyimg.loading.cache import FORMAT
from pyimg.loading.inputs import find_build_file, glob_package
from pyimg.loading.loader import Loader, Package, RuleClass, Target

__all__ = ["PackageStore", "StoredLoader"]


class PackageStore:
    """The directory of package records in an output base, and the digests that validate them.

    `context_files` (MODULE.pyimg, pyimg.lock) decide which external repositories a load() can
    name: a change of either invalidates every record.
    """

    def __init__(self, directory: Path, digests: FileDigestCache,
                 context_files: Sequence[Path] = ()) -> None:
        self.directory = directory
        self.digests = digests
        self.salt = [__version__, FORMAT, *(self._digest(str(p)) for p in context_files)]
        self._files_ok: dict[tuple[str, str], bool] = {}  # (path, digest) -> still that digest

    def _digest(self, path: str) -> str:
        try:
            return self.digests.digest(path)[0].hex
        except FileNotFoundError:
            return ""
        except OSError:
            return "?"

    def path(self, package: str) -> Path:
        return self.directory / (hashlib.sha256(package.encode()).hexdigest()[:32] + ".json")

    def file_unchanged(self, path: str, digest: str) -> bool:
        """Whether the file at `path` still has `digest` (asked once per build and file: many
        packages load the same .bzl)."""
        ok = self._files_ok.get((path, digest))
        if ok is None:
            ok = self._files_ok[(path, digest)] = self._digest(path) == digest
        return ok

    def read(self, package: str) -> dict[str, Any] | None:
        """The record of `package` as saved, or None (absent, torn or of another version)."""
        try:
            data = json.loads(self.path(package).read_bytes())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("salt") != self.salt or data.get("package") != package:
            return None
        return data

    def write(self, package: str, record: dict[str, Any]) -> None:
        """Save a record: a temp file renamed over the old one (a reader sees either)."""
        path = self.path(package)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                # Not sorted: attribute dicts keep the order the BUILD file wrote them in.
                f.write(json.dumps({**record, "salt": self.salt, "package": package},
                                   separators=(",", ":")).encode())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class StoredLoader(Loader):
    """A Loader that serves workspace packages from a `PackageStore` when their records are
    still valid, evaluates the others, and saves those (`save`). External repositories'
    packages are always evaluated (their BUILD files are generated with the repository).

    Without `reuse` (PYIMG_ANALYSIS_REUSE=0) no record is served; fresh ones are still saved.
    """

    def __init__(self, workspace: Path, repositories: Callable[[str, str | None], Path] | None,
                 store: PackageStore, reuse: bool = True) -> None:
        super().__init__(workspace, repositories)
        self.store = store
        self._reuse = reuse
        self._fresh: list[str] = []  # workspace packages evaluated by this loader, in order
        self._stored_files: set[str] = set()  # display names of the files of served packages
        self._rule_objects: dict[str, RuleClass] = {}
        self.served = 0  # packages served from the store (for tests and the benchmark)

    def package(self, name: str, origin: str | None = None, repo: str = "") -> Package:
        if not repo and name not in self.packages:
            restored = self._restore(name) if self._reuse else None
            if restored is not None:
                self.packages[name] = restored
                self.served += 1
                return restored
            pkg = super().package(name, origin, repo)
            self._fresh.append(name)
            return pkg
        return super().package(name, origin, repo)

    def source_text(self, display: str) -> str | None:
        text = super().source_text(display)
        if text is not None or display not in self._stored_files:
            return text
        try:  # a served package's file: the one on disk is the one loading read
            return self.read_paths[display].read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None

    # -- records -----------------------------------------------------------------------------

    def _restore(self, name: str) -> Package | None:
        data = self.store.read(name)
        if data is None:
            return None
        try:
            if find_build_file(self.workspace, name) != data["build_file"]:
                return None
            files: dict[str, list[str]] = data["files"]
            if not all(self.store.file_unchanged(path, digest) for path, digest in files.values()):
                return None
            if not self._globs_same(name, data["globs"]):
                return None
            pkg = Package(name, Path(data["build_file"]), data["build_display"])
            pkg.default_visibility = data["default_visibility"]
            rules = data["rules"]
            pkg.targets = {
                tname: Target(Label("", name, tname), self._rule(rid, rules[rid]), attrs, origin,
                              visibility)
                for tname, (rid, attrs, origin, visibility) in data["targets"].items()
            }
        except (KeyError, TypeError, ValueError):
            return None
        for display, (path, digest) in files.items():
            self.read_files[display] = digest
            self.read_paths[display] = Path(path)
            self._stored_files.add(display)
        self.globs.extend((name, tuple(i), tuple(e), tuple(r)) for i, e, r in data["globs"])
        return pkg

    def _globs_same(self, name: str, globs: list[list[list[str]]]) -> bool:
        def build_file(package: str) -> str | None:
            return find_build_file(self.workspace, package)

        try:
            return all(glob_package(self.workspace, name, include, exclude, build_file,
                                    self.confinement) == result
                       for include, exclude, result in globs)
        except UserInputError:
            return False  # a link leaving the workspace, a refused name: evaluation reports it

    def _rule(self, rid: str, d: dict[str, Any]) -> RuleClass:
        rule = self._rule_objects.get(rid)
        if rule is None:
            rule = self._rule_objects[rid] = RuleClass(
                rid, d["name"], d["module"], d["attrs"], d["doc"], d["origin"],
                tuple(d["fragments"]))
        return rule

    def save(self) -> None:
        """Write the record of every workspace package this loader evaluated."""
        for name in self._fresh:
            pkg = self.packages.get(name)
            if pkg is not None:
                self.store.write(name, self._record(pkg))
        self._fresh = []

    def _record(self, pkg: Package) -> dict[str, Any]:
        read = [pkg.build_display, *self.loaded_by.get(pkg.build_display, {})]
        rules = {t.rule.rid: t.rule for t in pkg.targets.values()}
        return {
            "build_file": str(pkg.build_file),
            "build_display": pkg.build_display,
            "files": {d: [str(self.read_paths[d]), self.read_files[d]] for d in read},
            "globs": [[list(i), list(e), list(r)] for p, i, e, r in self.globs if p == pkg.name],
            "default_visibility": pkg.default_visibility,
            "targets": {n: [t.rule.rid, t.attrs, t.origin, t.visibility]
                        for n, t in pkg.targets.items()},
            "rules": {rid: {"name": r.name, "module": r.module, "attrs": r.attrs, "doc": r.doc,
                            "origin": r.origin, "fragments": list(r.fragments)}
                      for rid, r in rules.items()},
        }
