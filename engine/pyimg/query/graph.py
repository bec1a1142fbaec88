"""The target graph that `pyimg query` walks: integer nodes, persisted beside the loading cache.

Node `i` has a label, a kind (`SOURCE_FILE` for a file) and its direct dependencies as node ids,
sorted by label. A rule target depends on every label in its label-typed attributes (all branches
of a `select()`). Packages come from `loading/graph.json` while the inputs it was derived from are
unchanged (the loading cache's own check, `inputs_valid`); any other package comes from a
CachedLoader, made on first need, which serves it from the loading cache or evaluates its BUILD
file. Full targets (attributes, origins) always come from that loader: the graph holds only what
`deps`, `rdeps`, `kind` and the label outputs need, so that such a query reads one small file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyimg import __version__
from pyimg.core.cas import atomic_write_bytes
from pyimg.errors import UserInputError
from pyimg.labels import Label, Pattern, parse_label
from pyimg.loading.inputs import find_packages, inputs_valid

if TYPE_CHECKING:
    # Not imported at run time: they start the Starlark interpreter, which a query served from
    # graph.json never needs.
    from pyimg.core.file_digests import FileDigestCache
    from pyimg.loading.cache import CachedLoader
    from pyimg.loading.loader import Target

__all__ = ["LABEL_TYPES", "SOURCE_FILE", "TargetGraph", "attr_labels", "select_branches"]

SOURCE_FILE = "source file"
LABEL_TYPES = ("label", "label_list", "label_keyed_string_dict")
_FORMAT = 2  # of graph.json (2: origins are file:line:col); another version or format is ignored


def select_branches(value: Any) -> list[Any]:
    """Every branch of a select() (or the value itself): the graph holds all configurations."""
    if isinstance(value, dict) and "__select__" in value:
        return list(value["__select__"].values())
    return [value]


def attr_labels(kind: str, value: Any) -> list[str]:
    """The labels an attribute of type `kind` (one of LABEL_TYPES) holds, in every branch."""
    out: list[str] = []
    for v in select_branches(value):
        if v is None:
            continue
        if kind == "label":
            out.append(v)
        else:  # label_list, or label_keyed_string_dict (the keys)
            out.extend(v)
    return out


def _target_deps(t: Target) -> set[Label]:
    found: set[Label] = set()
    for name, value in t.attrs.items():
        kind = (t.rule.attrs.get(name) or {}).get("type")
        if kind in LABEL_TYPES:
            found.update(parse_label(v) for v in attr_labels(kind, value))
    return found


class TargetGraph:
    """The nodes a query reached, numbered in the order it reached them.

    A node is *resolved* once its package is in the graph (so its kind and dependencies are
    known) and, for a source file, once the file was seen on disk: `node`, `deps_of` and `kind`
    resolve what they return, raising the loader's error (with the origin of the target that
    named the label) for a label that is neither a target nor a file.
    """

    def __init__(
        self,
        workspace: Path,
        path: Path,
        digests: FileDigestCache,
        loader: Callable[[], CachedLoader],
    ) -> None:
        self.workspace = workspace
        self._path = path
        self._digests = digests
        self._make_loader = loader
        self._loader: CachedLoader | None = None
        self.labels: list[Label] = []
        self._index: dict[Label, int] = {}
        self._kinds: list[str | None] = []  # None: its package is not in the graph yet
        self._deps: list[Sequence[int]] = []
        self._resolved: list[bool] = []
        self._packages: dict[tuple[str, str], Sequence[int]] = {}  # (repo, package) -> targets
        self._stored: set[str] = set()  # the packages graph.json held
        # The files of each workspace directory that a `//...` walk listed: reaching a source
        # file there needs no stat of its own.
        self._files: dict[str, set[str]] = {}
        self._restore()

    @property
    def loader(self) -> CachedLoader:
        if self._loader is None:
            self._loader = self._make_loader()
        return self._loader

    # -- nodes --------------------------------------------------------------------------------

    def intern(self, label: Label) -> int:
        """The node of `label`, added unresolved if new."""
        i = self._index.get(label)
        if i is None:
            i = self._index[label] = len(self.labels)
            self.labels.append(label)
            self._kinds.append(None)
            self._deps.append(())
            self._resolved.append(False)
        return i

    def node(self, label: Label, by: int | None = None) -> int:
        """The resolved node of `label`; errors name the origin of `by`, the target that names it."""
        i = self.intern(label)
        if not self._resolved[i]:
            self._resolve(i, by)
        return i

    def kind(self, i: int) -> str:
        """The rule kind of node `i` (`genrule`), or SOURCE_FILE."""
        if not self._resolved[i]:
            self._resolve(i, None)
        kind = self._kinds[i]
        assert kind is not None
        return kind

    def deps_of(self, i: int) -> Sequence[int]:
        """The direct dependencies of node `i`, resolved, sorted by label."""
        if not self._resolved[i]:
            self._resolve(i, None)
        deps = self._deps[i]
        resolved = self._resolved
        for d in deps:
            if not resolved[d]:
                self._resolve(d, i)
        return deps

    def target(self, i: int) -> Target | None:
        """The full target of a rule node (from the loader), None for a source file."""
        if self.kind(i) == SOURCE_FILE:
            return None
        return self.loader.target(self.labels[i])

    def package_targets(self, package: str, repo: str = "") -> Sequence[int]:
        """The rule targets of a package (its BUILD file's declaration order)."""
        ids = self._packages.get((repo, package))
        if ids is None:
            ids = self._add_package(repo, package, None)
        return ids

    def pattern_targets(self, pattern: Pattern) -> list[int]:
        """The rule targets a `//pkg:all` or `//pkg/...` pattern names."""
        if not pattern.recursive:
            return list(self.package_targets(pattern.package, pattern.repo))
        packages = find_packages(self.workspace, pattern.package, self._files)
        if not packages:
            raise UserInputError(f"no packages found for pattern '{pattern}'")
        return [i for name in packages for i in self.package_targets(name)]

    def _resolve(self, i: int, by: int | None) -> None:
        label = self.labels[i]
        if label[:2] not in self._packages:
            self._add_package(label.repo, label.package, self._origin(by))
        if self._kinds[i] in (None, SOURCE_FILE) and not self._is_file(label):
            # The loader's error, with its hints ("did you mean"); it returns only if the file
            # appeared meanwhile.
            self.loader.target(label, self._origin(by))
        if self._kinds[i] is None:  # not a target of its package: a file
            self._kinds[i] = SOURCE_FILE
        self._resolved[i] = True

    def _is_file(self, label: Label) -> bool:
        if label.repo:
            return os.path.isfile(os.path.join(self.loader.repo_root(label.repo), *label[1:]))
        directory, _, name = f"{label.package}/{label.name}".lstrip("/").rpartition("/")
        listed = self._files.get(directory)
        if listed is not None:
            return name in listed
        return os.path.isfile(os.path.join(self.workspace, label.package, label.name))

    def _origin(self, by: int | None) -> str | None:
        if by is None:
            return None
        t = self.loader.target(self.labels[by])
        return t.origin if t is not None else None

    def _add_package(self, repo: str, name: str, origin: str | None) -> Sequence[int]:
        pkg = self.loader.package(name, origin, repo)
        targets = list(pkg.targets.values())
        ids = [self.intern(t.label) for t in targets]
        for i, t in zip(ids, targets, strict=True):
            self._kinds[i] = t.kind
            self._resolved[i] = True
        by_label = self.labels.__getitem__
        for i, t in zip(ids, targets, strict=True):
            self._deps[i] = sorted((self.intern(d) for d in _target_deps(t)), key=by_label)
        self._packages[repo, name] = ids
        return ids

    # -- persistence --------------------------------------------------------------------------

    def _restore(self) -> None:
        try:
            data = json.loads(self._path.read_bytes())
        except (OSError, ValueError):
            return
        try:
            if data["v"] != [__version__, _FORMAT]:
                return
            labels = [Label(*n) for n in data["labels"]]
            kinds, deps, packages = data["kinds"], data["deps"], data["packages"]
            n = len(labels)
            if not (len(kinds) == len(deps) == n and isinstance(packages, dict)):
                return
            ids = [d for ds in deps for d in ds] + [i for ts in packages.values() for i in ts]
            if ids and not (min(ids) >= 0 and max(ids) < n):
                return
            if not inputs_valid(data["inputs"], (), self.workspace, self._digests):
                return
        except (KeyError, TypeError, ValueError):
            return
        self.labels = labels
        self._index = {label: i for i, label in enumerate(labels)}
        self._kinds = kinds
        self._deps = deps
        # A file is checked when a query reaches it: it may have been removed since.
        self._resolved = [k is not None and k != SOURCE_FILE for k in kinds]
        self._packages = {("", name): ids for name, ids in packages.items()}
        self._stored = set(packages)

    def save(self) -> None:
        """Persist the workspace packages that the loading cache now holds, under its inputs.

        Writes only when the graph gained a package (nothing is written when graph.json served
        the whole query), so that graph.json is always a subset of the loading cache.
        """
        if self._loader is not None:
            entry = self._loader.save()
            keep = sorted(k for r, k in self._packages if not r and k in entry["packages"])
            if set(keep) != self._stored:
                self._write(keep, entry["inputs"])
        self._digests.save()  # digests re-computed for files whose stat alone changed

    def _write(self, keep: list[str], inputs: dict[str, Any]) -> None:
        stored = set(keep)
        targets = [i for k in keep for i in self._packages["", k]]
        # Renumbered: the stored targets, then what they depend on (nodes this query only passed
        # through are left out).
        order = list(dict.fromkeys(targets + [d for i in targets for d in self._deps[i]]))
        number = {i: n for n, i in enumerate(order)}
        labels, kinds, deps = [], [], []
        for i in order:
            label = self.labels[i]
            known = not label.repo and label.package in stored
            labels.append(list(label))
            kinds.append(self._kinds[i] if known else None)
            deps.append([number[d] for d in self._deps[i]] if known else [])
        data = {
            "v": [__version__, _FORMAT],
            "inputs": inputs,
            "packages": {k: [number[i] for i in self._packages["", k]] for k in keep},
            "labels": labels,
            "kinds": kinds,
            "deps": deps,
        }
        atomic_write_bytes(self._path, json.dumps(data, separators=(",", ":")).encode())
