"""Persists loaded packages, so that `pyimg query` reads one file instead of evaluating BUILD files."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pyimg import __version__
from pyimg.core.cas import atomic_write_bytes
from pyimg.core.file_digests import FileDigestCache
from pyimg.labels import Label
from pyimg.loading.inputs import inputs_valid, loading_inputs
from pyimg.loading.loader import Loader, Package, RuleClass, Target

__all__ = ["CachedLoader", "LoadingCache"]

# Of what loading and analysis persist (this file and the analysis cache): bump it when their
# contents change meaning (2: origins are file:line:col; 3: ctx.label is a canonical string;
# 4: the sources analysis checks stay in the workspace, and host tools' providers).
FORMAT = 5  # 5: rules carry their configuration fragments, label attributes their cfg


def _merge_inputs(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any] | None:
    """The union of two input sets, or None when they disagree on a file's digest (it changed
    between validation and loading: the old packages may be stale)."""
    for name, entry in new["files"].items():
        if name in old["files"] and old["files"][name] != entry:
            return None
    globs = list(old["globs"])
    globs += [g for g in new["globs"] if g not in globs]
    return {
        "files": {**old["files"], **new["files"]},
        "globs": globs,
        "packages": {**old["packages"], **new["packages"]},
        "build_files": {**old["build_files"], **new["build_files"]},
    }


class LoadingCache:
    """One JSON file in the output base: the workspace packages that queries loaded, the rule
    classes their targets use, and the inputs that keep them valid (`inputs_valid`)."""

    def __init__(
        self, path: Path, digests: FileDigestCache, extra_files: Sequence[Path] = ()
    ) -> None:
        self.path = path
        self.digests = digests
        self.extra_files = list(extra_files)

    def get(self, workspace: Path) -> dict[str, Any] | None:
        """The saved entry when still valid (checked against `workspace`), else None."""
        try:
            data = json.loads(self.path.read_bytes())
        except (FileNotFoundError, ValueError):
            return None
        try:
            if data["v"] != [__version__, FORMAT] or not isinstance(data["packages"], dict):
                return None
            if not isinstance(data["rules"], dict):
                return None
            if not inputs_valid(data["inputs"], (), workspace, self.digests):
                return None
        except (KeyError, TypeError, ValueError):
            return None
        return data

    def put(self, data: dict[str, Any]) -> dict[str, Any]:
        """Save `data` (inputs, packages, rules) and return the entry as `get` would."""
        # Not canonical JSON: key order is part of the attribute values (a dict attribute prints
        # in the order the BUILD file wrote it).
        data = {**data, "v": [__version__, FORMAT]}
        atomic_write_bytes(self.path, json.dumps(data, separators=(",", ":")).encode())
        return data


def _dump_package(pkg: Package) -> dict[str, Any]:
    return {
        "build_file": str(pkg.build_file),
        "build_display": pkg.build_display,
        "default_visibility": pkg.default_visibility,
        "targets": {
            name: [t.rule.rid, t.attrs, t.origin, t.visibility] for name, t in pkg.targets.items()
        },
    }


def _dump_rule(rule: RuleClass) -> dict[str, Any]:
    # The doc string is left out: query never shows it.
    return {"name": rule.name, "module": rule.module, "attrs": rule.attrs, "origin": rule.origin,
            "fragments": list(rule.fragments)}


class CachedLoader(Loader):
    """A Loader that serves workspace packages from a LoadingCache and loads the others for real.

    The entry is validated once, when constructed; an invalid one is ignored (and replaced by
    `save`). External repositories (`@repo//...`) are always loaded for real. Call `save` after
    the query, so that the packages it loaded are there next time.
    """

    def __init__(
        self,
        workspace: Path,
        repositories: Callable[[str, str | None], Path] | None,
        cache: LoadingCache,
    ) -> None:
        super().__init__(workspace, repositories)
        self._cache = cache
        entry = cache.get(workspace)
        self._entry = entry
        self._raw: dict[str, Any] = entry["packages"] if entry else {}
        self._rule_data: dict[str, Any] = entry["rules"] if entry else {}
        self._rule_objs: dict[str, RuleClass] = {}
        self.served = 0  # packages served from the cache (for tests)

    def package(self, name: str, origin: str | None = None, repo: str = "") -> Package:
        if not repo and name not in self.packages and name in self._raw:
            self.packages[name] = self._restore(name, self._raw[name])
            self.served += 1
        return super().package(name, origin, repo)

    def _rule(self, rid: str) -> RuleClass:
        rule = self._rule_objs.get(rid)
        if rule is None:
            d = self._rule_data[rid]
            rule = RuleClass(rid, d["name"], d["module"], d["attrs"], "", d["origin"],
                             tuple(d.get("fragments", ())))
            self._rule_objs[rid] = rule
        return rule

    def _restore(self, name: str, d: dict[str, Any]) -> Package:
        pkg = Package(name, Path(d["build_file"]), d["build_display"])
        pkg.default_visibility = d["default_visibility"]
        pkg.targets = {
            tname: Target(Label("", name, tname), self._rule(rid), attrs, origin, visibility)
            for tname, (rid, attrs, origin, visibility) in d["targets"].items()
        }
        return pkg

    def source_text(self, display: str) -> str | None:
        text = super().source_text(display)
        if text is not None or self._entry is None:
            return text
        # Served from the cache: the file on disk is the one loading read (the entry is valid).
        entry = self._entry["inputs"]["files"].get(display)
        if entry is None:
            return None
        try:
            return Path(entry[0]).read_text(encoding="utf-8")
        except OSError:
            return None

    def save(self) -> dict[str, Any]:
        """Persist the cached packages plus the workspace packages loaded for real, and the file
        digests that validation computed (so the next query only stats the files). Returns the
        entry the cache now holds (its "inputs" and "packages")."""
        fresh = {k: p for k, p in self.packages.items() if not p.repo and k not in self._raw}
        if self._entry is None or fresh:
            self._entry = self._write(fresh)
        self._cache.digests.save()
        return self._entry

    def _write(self, fresh: dict[str, Package]) -> dict[str, Any]:
        new = loading_inputs(
            self.loading_record(), self._cache.digests, self._cache.extra_files
        )
        packages, rules = {}, {}
        if self._entry is not None:
            merged = _merge_inputs(self._entry["inputs"], new)
            if merged is not None:
                new, packages, rules = merged, dict(self._raw), dict(self._rule_data)
        for key, pkg in fresh.items():
            packages[key] = _dump_package(pkg)
            for t in pkg.targets.values():
                rules.setdefault(t.rule.rid, _dump_rule(t.rule))
        return self._cache.put({"inputs": new, "packages": packages, "rules": rules})
