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
from pyimg.core.digest import canonical_json, digest_bytes
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
            if not self._valid(data["inputs"], patterns, loader) or not self._confined(data, loader):
                return None
            # Only now the targets: after a BUILD edit the entry is stale, and the targets are
            # nearly all of its bytes (11 MB at 10,000 targets).
            return _result(_with_targets(path, data))
        except (OSError, KeyError, TypeError, ValueError):
            return None

    def saved(self, patterns: list[Pattern], platform: dict[str, Any]) -> AnalysisResult | None:
        """The saved analysis unchecked, for a caller that knows at stat level that nothing
        loading read changed since a build used it (attest/built.py: the no-op record)."""
        try:
            path = self._path(patterns, platform)
            return _result(_with_targets(path, json.loads(path.read_bytes())))
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
        # In the analysis's order, not sorted (nothing hashes it for its identity: 0.3 s at
        # 10,000 targets), with the actions the target cache has as JSON already.
        targets = json.dumps({
            label: {
                "label": t.label, "kind": t.kind, "origin": t.origin,
                "providers": t.providers if label in keep else {},
                "actions": (t.actions_json if t.actions_json is not None
                            else [action_to_json(a) for a in t.actions]),
                "configuration": t.configuration,
            }
            for label, t in result.targets.items()
            if t.actions or label in keep
        }, separators=(",", ":"), ensure_ascii=False).encode()
        # Two files: the entry, small, read first to check it, and its targets, which name the
        # entry they belong to on their first line (written first: a reader never pairs an
        # entry with other targets).
        link = digest_bytes(targets).hex
        path = self._path(patterns, platform)
        atomic_write_bytes(_targets_path(path), link.encode() + b"\n" + targets)
        atomic_write_bytes(path, canonical_json({
            "inputs": loading_inputs(loader.loading_record(patterns), self.digests, extra_files),
            "targets": link,
            "top_level": result.top_level,
            "sources": sorted(loader.source_files),
        }))

    def _valid(self, inputs: dict[str, Any], patterns: list[Pattern], loader: Loader) -> bool:
        return inputs_valid(inputs, patterns, loader.workspace, self.digests)

    def _confined(self, data: dict[str, Any], loader: Loader) -> bool:
        return sources_confined(loader.workspace, data["sources"])


def _with_targets(entry: Path, data: dict[str, Any]) -> dict[str, Any]:
    """`data`, the entry at `entry`, with its targets read from their file; ValueError when that
    file holds another entry's (a crash between the two writes)."""
    link, _, text = _targets_path(entry).read_bytes().partition(b"\n")
    if link.decode() != data["targets"]:
        raise ValueError(f"{entry}: the targets file is another entry's")
    return {**data, "targets": json.loads(text)}


def _targets_path(entry: Path) -> Path:
    return entry.with_suffix(".targets")
