"""Serves the actions of a full build that are exactly as the last build of the same command line
ran them, from that build's action lines (build/incremental.py), without keying them again.

A full build after a BUILD-file edit has an action graph that is mostly the recorded one. An
action whose definition, input digests and host tools' digests equal a recorded line's has that
line's key (the key is a function of those and of the format version, which the record names),
so its key and result are taken from the line instead of hashing its key components and reading
its action-cache entry; its outputs must still be in the store. Any other action is keyed and
looked up as usual.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pyimg.build.incremental import VERSION, ActionLines, actions_path
from pyimg.core.action import Action, action_from_json
from pyimg.core.action_cache import ActionCache, ActionResult
from pyimg.core.cas import ContentStore
from pyimg.core.digest import Digest
from pyimg.core.executor import ActionExecutor, BuildContext, ExecutionRecord
from pyimg.core.file_digests import FileDigestCache

__all__ = ["RecordedExecutor", "recorded_lines"]


def recorded_lines(record: Path, cache_root: Path, format_version: str
                   ) -> tuple[ActionLines, dict[str, int]] | None:
    """The action lines of the record at `record` with the line of each first output, when it
    was made with this cache root and format version; None when there is none to use."""
    try:
        raw = record.read_bytes()
        index = json.loads(raw[raw.index(b"\n") + 1:])
        if (index.get("version") != VERSION or index["cache_root"] != str(cache_root)
                or index["format"] != format_version):
            return None
        lines = ActionLines(actions_path(record), index["actions"], index["spans"])
        firsts = index["firsts"]
        if len(firsts) != len(lines):
            return None
        return lines, {first: i for i, first in enumerate(firsts)}
    except (OSError, ValueError, KeyError, TypeError):
        return None


class RecordedExecutor(ActionExecutor):
    """An ActionExecutor that serves an action unchanged since the recorded build from its line."""

    def __init__(self, ctx: BuildContext, cas: ContentStore, cache: ActionCache,
                 digests: FileDigestCache, lines: ActionLines, position: dict[str, int]) -> None:
        super().__init__(ctx, cas, cache, digests)
        self._lines = lines
        self._position = position
        self.served_from_record = 0

    def lookup(self, action: Action) -> tuple[Digest, dict[str, Any], ExecutionRecord | None]:
        components = self.components(action)
        hit = self._from_record(action, components)
        if hit is not None:
            return hit
        return self.serve(action, components)

    def _from_record(self, action: Action, components: dict[str, Any]
                     ) -> tuple[Digest, dict[str, Any], ExecutionRecord] | None:
        i = self._position.get(action.all_outputs[0])
        if i is None or action.secrets:
            return None
        try:
            line = self._lines[i]
            if (line["inputs"] != components["inputs"]
                    or line["host_tools"] != components["host_tools"]
                    or action_from_json(line["action"]) != action):  # display fields aside
                return None
            key = Digest.parse(line["key"])
            result = ActionResult.from_json(line["result"])
        except (ValueError, KeyError, TypeError):
            return None
        if not all(self.cas.verify(f.digest, f.executable) for f in result.all_files()):
            return None  # the store lost a blob: the action cache decides (or it runs again)
        self.record_result(action, result)
        self.served_from_record += 1
        return key, components, ExecutionRecord(action, key, components, True, result,
                                                served="local")
