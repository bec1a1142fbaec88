"""Persists each loaded workspace package on its own, so that a build after a BUILD-file edit
evaluates only the packages whose inputs changed (docs/architecture.md, "How a build runs").

A package's record holds its targets, the rule classes they use, and what its evaluation read: its
BUILD file and every .bzl file that file loaded, directly or not (with their digests), and each
glob() with its result. It is served while all of those are the same: the files through the
stat-keyed digest cache, the globs run again. Records are one file per package, so an edit
costs the evaluation and the write of the packages it touches, not of the workspace. A record
is written without fsync: a torn one does not parse and counts as absent.

A record also holds the stat of its BUILD file when that was read or last found unchanged
(`build_stat`): `reload_packages` compares it with the stat the last build of a command line saw,
so that it knows the record is of the file that build loaded (build/incremental.py: change
pruning).
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyimg import __version__
from pyimg.core.digest import digest_bytes
from pyimg.core.file_digests import FileDigestCache
from pyimg.errors import PyimgError, UserInputError
from pyimg.labels import Label
from pyimg.loading.cache import FORMAT
from pyimg.loading.inputs import find_build_file, glob_package
from pyimg.loading.loader import Loader, Package, RuleClass, Target

__all__ = ["PackageStore", "Reloaded", "StoredLoader", "build_stat", "reload_packages"]


def build_stat(path: str) -> list[int] | None:
    """What a record keeps of its BUILD file: [size, mtime_ns, inode, ctime_ns] (the form of the
    no-op record's stats, build/noop.py), None if absent."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]


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
        # write_later's thread, its queue of (file, bytes) and the first error it met.
        self._queue: queue.Queue[tuple[Path, bytes] | None] | None = None
        self._writer: threading.Thread | None = None
        self._error: OSError | None = None

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
        self._write_file(self.path(package), self._encode(package, record))

    def write_later(self, package: str, record: dict[str, Any]) -> None:
        """`write`, by a thread of its own: the record is encoded now (its values may change
        later), the file made meanwhile. Making a file costs ~0.5 ms of kernel time on a disk
        that just deleted many (ext4 scans its recently freed inodes), a second or more per 2,000
        packages of a cold build, which that thread spends on a core loading leaves idle.
        `flush` waits for every pending file and raises the first error."""
        if self._queue is None:
            self._queue = queue.Queue()
            self._writer = threading.Thread(target=self._write_pending, name="package-records",
                                            daemon=True)
            self._writer.start()
        self._queue.put((self.path(package), self._encode(package, record)))

    def flush(self) -> None:
        if self._queue is None:
            return
        self._queue.put(None)
        assert self._writer is not None
        self._writer.join()
        self._queue = self._writer = None
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _write_pending(self) -> None:
        assert self._queue is not None
        while (item := self._queue.get()) is not None:
            if self._error is None:  # after a failure the rest are dropped: records are optional
                try:
                    self._write_file(*item)
                except OSError as e:
                    self._error = e

    def _encode(self, package: str, record: dict[str, Any]) -> bytes:
        # Not sorted: attribute dicts keep the order the BUILD file wrote them in.
        return json.dumps({**record, "salt": self.salt, "package": package},
                          separators=(",", ":")).encode()

    @staticmethod
    def _write_file(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
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
        self._stored_files: set[str] = set()  # display names of the files of served packages
        self._rule_objects: dict[str, RuleClass] = {}
        # Package -> its BUILD file's stat, the same before and after it was read (else None).
        self._build_stats: dict[str, list[int] | None] = {}
        # Records served whose BUILD file has another stat now, same contents: saved with it.
        self._restamped: dict[str, dict[str, Any]] = {}
        self.served = 0  # packages served from the store (for tests and the benchmark)

    def package(self, name: str, origin: str | None = None, repo: str = "") -> Package:
        if not repo and name not in self.packages:
            restored = self._restore(name) if self._reuse else None
            if restored is not None:
                self.packages[name] = restored
                self.served += 1
                return restored
            path = find_build_file(self.workspace, name)
            before = build_stat(path) if path is not None else None
            pkg = super().package(name, origin, repo)
            self._build_stats[name] = before if build_stat(str(pkg.build_file)) == before else None
            # Written while loading goes on: its record is complete once it evaluated.
            self.store.write_later(name, self._record(pkg))
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
            stat = build_stat(data["build_file"])
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
        if stat != data.get("build_stat") and stat == build_stat(data["build_file"]):
            # A BUILD file saved again as it was (a checkout): the record is of it still.
            self._restamped[name] = {**data, "build_stat": stat}
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
        """Write the record of every workspace package this loader evaluated (those still
        being written when this is called, and the restamped ones)."""
        for name, data in self._restamped.items():
            self.store.write_later(name, data)
        self._restamped = {}
        self.store.flush()

    def _record(self, pkg: Package) -> dict[str, Any]:
        read = [pkg.build_display, *self.loaded_by.get(pkg.build_display, {})]
        rules = {t.rule.rid: t.rule for t in pkg.targets.values()}
        return {
            "build_file": str(pkg.build_file),
            "build_display": pkg.build_display,
            "build_stat": self._build_stats.get(pkg.name),
            "files": {d: [str(self.read_paths[d]), self.read_files[d]] for d in read},
            "globs": [[list(i), list(e), list(r)] for p, i, e, r in self.globs if p == pkg.name],
            "default_visibility": pkg.default_visibility,
            "targets": {n: [t.rule.rid, t.attrs, t.origin, t.visibility]
                        for n, t in pkg.targets.items()},
            "rules": {rid: {"name": r.name, "module": r.module, "attrs": r.attrs, "doc": r.doc,
                            "origin": r.origin, "fragments": list(r.fragments)}
                      for rid, r in rules.items()},
        }


@dataclass
class Reloaded:
    """A package whose BUILD file changed, evaluated again: its targets are those of its record
    in all that can reach an action, an output or a report; only their lines may have moved."""

    name: str
    build_display: str
    origins: dict[str, tuple[str, str]]  # label -> (recorded origin, origin now), every target


def reload_packages(workspace: Path, store: PackageStore,
                    build_files: Mapping[str, tuple[Sequence[int], Sequence[int]]]
                    ) -> list[Reloaded] | None:
    """Evaluate again the packages of `build_files` (each BUILD file's path -> the stat the last
    build saw, and the stat it has now) and save their records; None when any of them may load
    differently from that build: no record, or a record of another version of the file; an
    error (the full build reports it); a target added, removed or changed in its rule class,
    attributes or visibility; another default visibility, other .bzl files or glob()s. A file
    saved again as it was is not evaluated."""
    loader = StoredLoader(workspace, _no_repositories, store, reuse=False)
    reloaded: list[Reloaded] = []
    restamped: dict[str, dict[str, Any]] = {}
    try:
        for path, (seen, now) in build_files.items():
            name = _package_of(workspace, path)
            data = store.read(name) if name is not None else None
            if (name is None or data is None or data.get("build_file") != path
                    or data.get("build_stat") != list(seen)):
                return None
            try:
                raw = Path(path).read_bytes()
                recorded = data["files"][data["build_display"]][1]
            except (OSError, KeyError, TypeError, IndexError):
                return None
            if build_stat(path) != list(now):
                return None  # edited again since the check: the full build sorts it out
            if digest_bytes(raw).hex == recorded:
                restamped[name] = {**data, "build_stat": list(now)}
                reloaded.append(Reloaded(name, data["build_display"], {}))
                continue
            try:
                pkg = loader.package(name)
            except PyimgError:
                return None  # the full build evaluates it again and reports the error
            if loader._build_stats.get(name) != list(now):
                return None
            fresh = json.loads(json.dumps(loader._record(pkg)))
            origins = _same_targets(name, data, fresh)
            if origins is None:
                return None
            reloaded.append(Reloaded(name, pkg.build_display, origins))
    finally:
        loader.save()  # what evaluated is a valid record, pruned or not
    for name, data in restamped.items():
        store.write(name, data)
    return reloaded


def _no_repositories(repo: str, origin: str | None) -> Path:
    # Opening external repositories reads MODULE.pyimg: the full build does that.
    raise UserInputError(f"@{repo}: external repositories are opened by a full build",
                         origin=origin)


def _package_of(workspace: Path, build_file: str) -> str | None:
    """The workspace package whose BUILD file is `build_file`, None if it is none's."""
    directory = os.path.dirname(build_file)
    try:
        rel = os.path.relpath(directory, workspace)
    except ValueError:
        return None
    name = "" if rel == "." else Path(rel).as_posix()
    if name.startswith("../") or name == ".." or find_build_file(workspace, name) != build_file:
        return None
    return name


def _same_targets(name: str, recorded: dict[str, Any], fresh: dict[str, Any]
                  ) -> dict[str, tuple[str, str]] | None:
    """Each target's (recorded origin, origin now) when `fresh` (a package's record just made)
    has the targets of `recorded` in all but their origins; None otherwise."""
    display = fresh["build_display"]

    def loaded(record: dict[str, Any]) -> dict[str, Any]:
        return {d: v for d, v in record["files"].items() if d != display}

    if (recorded["build_display"] != display
            or recorded["default_visibility"] != fresh["default_visibility"]
            or loaded(recorded) != loaded(fresh)
            or sorted(recorded["globs"]) != sorted(fresh["globs"])
            or recorded["targets"].keys() != fresh["targets"].keys()):
        return None
    origins = {}
    for tname, (rid, attrs, origin, visibility) in fresh["targets"].items():
        old_rid, old_attrs, old_origin, old_visibility = recorded["targets"][tname]
        if (rid, attrs, visibility) != (old_rid, old_attrs, old_visibility):
            return None
        if recorded["rules"].get(rid) != fresh["rules"][rid]:
            return None
        origins[str(Label("", name, tname))] = (old_origin, origin)
    return origins
