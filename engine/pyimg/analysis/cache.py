"""Persists loading and analysis results, so a build whose BUILD/.bzl files did not change reads
one file instead of evaluating Starlark (docs/architecture.md, "How a build runs").

An entry is valid while loading would read the same inputs (`inputs.inputs_valid`, shared
with the persisted loading of `pyimg query`). The action graph does not depend on source contents
(those enter action keys at execution), so nothing else needs checking but that every source
file still resolves inside the workspace (a symlink re-pointed outside is reported by loading).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyimg import __version__
from pyimg.analysis.analyzer import AnalysisResult, TargetResult, host_tool_name
from pyimg.core.action import action_from_json, action_to_json
from pyimg.core.cas import atomic_write_bytes
from pyimg.core.digest import canonical_json
from pyimg.core.file_digests import FileDigestCache
from pyimg.labels import Pattern
from pyimg.loading.cache import FORMAT
from pyimg.loading.inputs import inputs_valid, loading_inputs, sources_confined
from pyimg.loading.loader import Loader

__all__ = ["AnalysisCache"]


def _result(data: dict[str, Any]) -> AnalysisResult:
    targets = {
        label: TargetResult(
            t["label"], t["kind"], t["origin"], t["providers"],
            [action_from_json(a) for a in t["actions"]], t.get("configuration", ""),
        )
        for label, t in data["targets"].items()
    }
    files = [path for path, _ in data["inputs"]["files"].values()]
    return AnalysisResult(targets, data["top_level"], files)


class AnalysisCache:
    def __init__(self, directory: Path, workspace: Path, digests: FileDigestCache) -> None:
        self.directory = directory
        self.workspace = workspace
        self.digests = digests

    def _path(self, patterns: list[Pattern], platform: dict[str, Any]) -> Path:
        key = canonical_json({"v": [__version__, FORMAT], "patterns": [str(p) for p in patterns],
                              "platform": platform})
        return self.directory / (hashlib.sha256(key).hexdigest()[:32] + ".json")

    def get(self, patterns: list[Pattern], platform: dict[str, Any], loader: Loader) -> AnalysisResult | None:
        path = self._path(patterns, platform)
        try:
            data = json.loads(path.read_bytes())
        except (FileNotFoundError, ValueError):
            return None
        try:
            if not self._valid(data["inputs"], patterns, loader) or not self._confined(data, loader):
                return None
            return _result(data)
        except (KeyError, TypeError, ValueError):
            return None

    def saved(self, patterns: list[Pattern], platform: dict[str, Any]) -> AnalysisResult | None:
        """The saved analysis unchecked, for a caller that knows at stat level that nothing
        loading read changed since a build used it (attest/built.py: the no-op record)."""
        try:
            return _result(json.loads(self._path(patterns, platform).read_bytes()))
        except (OSError, KeyError, TypeError, ValueError):
            return None

    def put(self, patterns: list[Pattern], platform: dict[str, Any], loader: Loader,
            result: AnalysisResult, extra_files: Sequence[Path] = ()) -> None:
        """Save `result`; `extra_files` also invalidate it (MODULE.pyimg, pyimg.lock), absent or not."""
        # A build needs the providers of the top-level targets (what to materialize and print)
        # and of host tools (where a missing one is declared); every other target contributes
        # just its actions.
        keep = set(result.top_level) | {
            label for label, t in result.targets.items() if host_tool_name(t) is not None
        }
        data = {
            "inputs": loading_inputs(loader.loading_record(patterns), self.digests, extra_files),
            "targets": {
                label: {
                    "label": t.label, "kind": t.kind, "origin": t.origin,
                    "providers": t.providers if label in keep else {},
                    "actions": [action_to_json(a) for a in t.actions],
                    "configuration": t.configuration,
                }
                for label, t in result.targets.items()
                if t.actions or label in keep
            },
            "top_level": result.top_level,
            "sources": sorted(loader.source_files),
        }
        atomic_write_bytes(self._path(patterns, platform), canonical_json(data))

    def _valid(self, inputs: dict[str, Any], patterns: list[Pattern], loader: Loader) -> bool:
        return inputs_valid(inputs, patterns, loader.workspace, self.digests)

    def _confined(self, data: dict[str, Any], loader: Loader) -> bool:
        return sources_confined(loader.workspace, data["sources"])
