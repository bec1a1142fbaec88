"""Incremental re-keying: after only source files changed, key again just the actions downstream
of them, take every other action's key and outputs from the record of the last build, and stop
where an action's inputs come out as recorded (change pruning, as in Bazel).

The caller finds the candidates (`downstream`: every action reading a changed file, directly or
through another candidate's outputs) and runs them through the ordinary scheduler with an
`IncrementalExecutor`. A candidate whose input digests all equal the recorded ones is served from
the record, without a key or a cache lookup; any other is keyed from its new input digests and
looked up or run like in a full build, so both compute the same keys from the same digests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from pyimg.core.action import Action, key_components
from pyimg.core.action_cache import ActionCache, ActionResult
from pyimg.core.cas import ContentStore
from pyimg.core.digest import Digest
from pyimg.core.executor import ActionExecutor, BuildContext, ExecutionRecord
from pyimg.core.file_digests import FileDigestCache
from pyimg.core.graphs import reachable

__all__ = ["IncrementalExecutor", "RecordedAction", "downstream"]


class RecordedAction(NamedTuple):
    """One action as the last build left it, with the input digests its key was computed from."""

    action: Action
    key: Digest
    inputs: dict[str, str]  # exec path -> digest as it enters the key ("+x" when executable)
    host_tools: dict[str, str]  # host path -> digest
    result: ActionResult


def downstream(roots: Iterable[int], readers: Callable[[int], Iterable[int]]) -> list[int]:
    """`roots` and every action reachable from them through `readers` (the actions that read an
    action's outputs), in ascending order."""
    return sorted(reachable(roots, readers))


class IncrementalExecutor(ActionExecutor):
    """Executes the candidates of an incremental build (the scheduler sees only those).

    `producers` are the recorded actions outside the candidates whose outputs candidates read;
    `sources` holds the digest of every source file a candidate reads, new for a changed file.
    """

    def __init__(
        self,
        ctx: BuildContext,
        cas: ContentStore,
        cache: ActionCache,
        digests: FileDigestCache,
        candidates: Iterable[RecordedAction],
        producers: Iterable[RecordedAction],
        sources: Mapping[str, str],
    ) -> None:
        super().__init__(ctx, cas, cache, digests)
        self._recorded = {r.action.all_outputs[0]: r for r in candidates}
        self._sources = sources
        self.pruned: set[str] = set()  # the first outputs of the candidates served from the record
        for r in producers:
            self.record_result(r.action, r.result)

    def input_digest(self, path: str) -> str:
        if self.produced(path) is None:
            return self._sources[path]
        return super().input_digest(path)

    def lookup(self, action: Action) -> tuple[Digest, dict[str, Any], ExecutionRecord | None]:
        recorded = self._recorded[action.all_outputs[0]]
        digests = {p: self.input_digest(p) for p in set(action.inputs) | set(action.tools)}
        if digests == recorded.inputs:
            # Change pruning: what it reads came out as recorded, so its key and outputs did too.
            self.record_result(action, recorded.result)
            self.pruned.add(action.all_outputs[0])
            record = ExecutionRecord(action, recorded.key, {}, True, recorded.result)
            return recorded.key, {}, record
        # Secrets never reach here: a build given --secret leaves no record to start from.
        return self.serve(action, key_components(
            action, digests, self.ctx.format_version, {}, recorded.host_tools))
