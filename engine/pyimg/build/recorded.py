"""Serves the actions of a full build that are exactly as the last build of the same command line
ran them, from that build's action lines (build/incremental.py), without their action-cache entries.

A full build after a BUILD-file edit has an action graph that is mostly the recorded one. An
action whose key (computed from its definition, input digests and host tools' digests, as for any
lookup) equals its recorded line's key takes that line's result instead of reading its
action-cache entry; its outputs must still be in the store. Any other action is looked up as
usual. A line starts with its key and its result (`record_lines` writes them first), so only that
start is read and parsed: the rest of the line, most of it, is never decoded here. A line of
another layout (a record from before) is never served: its action is looked up as usual.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pyimg.build.incremental import VERSION, ActionLines, actions_path
from pyimg.core.action import Action, action_key
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
        recorded = _key_and_result(self._lines.raw(i))
        if recorded is None:
            return None
        key = action_key(components)
        if str(key) != recorded[0]:
            return None  # changed since: the action cache decides (or it runs)
        try:
            result = ActionResult.from_json(recorded[1])
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        if not all(self.cas.verify(f.digest, f.executable) for f in result.all_files()):
            return None  # the store lost a blob: the action cache decides (or it runs again)
        self.record_result(action, result)
        self.served_from_record += 1
        return key, components, ExecutionRecord(action, key, components, True, result,
                                                served="local")


_HEAD = b'{"key": "'
_RESULT = '", "result": '
_DECODER = json.JSONDecoder()


def _key_and_result(line: bytes) -> tuple[str, Any] | None:
    """The key text and the result JSON at the start of an action line, parsing nothing after
    them; None for a line that does not start so (another layout, or bytes that do not parse)."""
    if not line.startswith(_HEAD):
        return None
    try:
        text = line.decode()
        end = text.index('"', len(_HEAD))
        start = end + len(_RESULT)
        if text[end:start] != _RESULT:
            return None
        result, _ = _DECODER.raw_decode(text, start)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    return text[len(_HEAD):end], result
