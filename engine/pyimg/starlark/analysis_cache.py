"""Persists loading and analysis results, so a build whose BUILD/.bzl files did not change reads
one file instead of evaluating Starlark (DESIGN.md: "a no-op build reads one file").

An entry is valid while every file that loading read has the same digest (checked through the
stat-keyed file-digest cache), every glob() returns the same files, and the packages that the
recursive patterns matched are the same. The action graph does not depend on source contents
(those enter action keys at execution), so nothing else needs checking.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from pyimg import __version__
from pyimg.core.action import Action
from pyimg.core.cas import atomic_write_bytes
from pyimg.core.digest import canonical_json
from pyimg.core.file_digests import FileDigestCache
from pyimg.starlark.analysis import AnalysisResult, TargetResult
from pyimg.starlark.labels import Pattern
from pyimg.starlark.loading import Loader, glob_package

__all__ = ["AnalysisCache"]

_FIELDS = [f.name for f in dataclasses.fields(Action)]
_TUPLE_FIELDS = {f.name for f in dataclasses.fields(Action) if "tuple" in str(f.type)}


def _action_to_json(a: Action) -> dict[str, Any]:
    return {name: getattr(a, name) for name in _FIELDS}  # JSON writes tuples as lists


def _action_from_json(d: dict[str, Any]) -> Action:
    fixed = {}
    for k, v in d.items():
        if k in _TUPLE_FIELDS:
            v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
        fixed[k] = v
    return Action(**fixed)


class AnalysisCache:
    def __init__(self, directory: Path, workspace: Path, digests: FileDigestCache) -> None:
        self.directory = directory
        self.workspace = workspace
        self.digests = digests

    def _path(self, patterns: list[Pattern], platform: dict[str, str]) -> Path:
        key = canonical_json({"v": __version__, "patterns": [str(p) for p in patterns],
                              "platform": platform})
        return self.directory / (hashlib.sha256(key).hexdigest()[:32] + ".json")

    def get(self, patterns: list[Pattern], platform: dict[str, str], loader: Loader) -> AnalysisResult | None:
        path = self._path(patterns, platform)
        try:
            data = json.loads(path.read_bytes())
        except (FileNotFoundError, ValueError):
            return None
        try:
            if not self._valid(data["inputs"], patterns, loader):
                return None
            targets = {
                label: TargetResult(
                    t["label"], t["kind"], t["origin"], t["providers"],
                    [_action_from_json(a) for a in t["actions"]],
                )
                for label, t in data["targets"].items()
            }
            files = [path for path, _ in data["inputs"]["files"].values()]
            return AnalysisResult(targets, data["top_level"], files)
        except (KeyError, TypeError, ValueError):
            return None

    def put(self, patterns: list[Pattern], platform: dict[str, str], loader: Loader,
            result: AnalysisResult, extra_files: list[Path] = ()) -> None:  # type: ignore[assignment]
        """Save `result`; `extra_files` also invalidate it (MODULE.pyimg, pyimg.lock), absent or not."""
        top = set(result.top_level)
        files = {name: [str(loader.read_paths[name]), digest]
                 for name, digest in sorted(loader.read_files.items())}
        for path in extra_files:
            files[str(path)] = [str(path), self._digest_or_absent(path)]
        data = {
            "inputs": {
                "files": files,
                "globs": [list(g[:3]) + [list(g[3])] for g in loader.globs],
                "packages": {str(p): list(loader.iter_packages(p.package))
                             for p in patterns if p.recursive},
                # Workspace packages only: an external repository's BUILD file is generated, and
                # its digest (in "files") already covers it.
                "build_files": {name: str(pkg.build_file)
                                for name, pkg in sorted(loader.packages.items()) if not pkg.repo},
            },
            # A build needs the providers of the top-level targets only (what to materialize
            # and print); every other target contributes just its actions.
            "targets": {
                label: {
                    "label": t.label, "kind": t.kind, "origin": t.origin,
                    "providers": t.providers if label in top else {},
                    "actions": [_action_to_json(a) for a in t.actions],
                }
                for label, t in result.targets.items()
                if t.actions or label in top
            },
            "top_level": result.top_level,
        }
        atomic_write_bytes(self._path(patterns, platform), canonical_json(data))

    def _digest_or_absent(self, path: Path) -> str:
        try:
            return self.digests.digest(path)[0].hex
        except FileNotFoundError:
            return ""

    def _valid(self, inputs: dict[str, Any], patterns: list[Pattern], loader: Loader) -> bool:
        for _, (path, digest) in inputs["files"].items():
            try:
                if self._digest_or_absent(Path(path)) != digest:
                    return False
            except OSError:
                return False
        for name, build_file in inputs["build_files"].items():
            found = loader.build_file(name)
            if found is None or str(found) != build_file:
                return False
        for pattern in patterns:
            if pattern.recursive:
                if list(loader.iter_packages(pattern.package)) != inputs["packages"].get(str(pattern)):
                    return False
        for package, include, exclude, result in inputs["globs"]:
            if glob_package(self.workspace, package, include, exclude, loader.build_file) != result:
                return False
        return True
