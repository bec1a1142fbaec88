"""The executor's seam to a second-level action cache and to remote execution: what it asks,
never how.

The executor serves an action from the local action cache first (level one); on a miss it asks a
`RemoteCache` before running the action, and offers it the result after a local run. When the
remote also executes (`executes`), the action runs there instead. How the remote speaks (REAPI,
gRPC) lives in `pyimg.remote`, which core does not import.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pyimg.core.action import Action
from pyimg.core.action_cache import ActionResult, FileOutput
from pyimg.core.digest import Digest

__all__ = ["RemoteCache", "RemoteRequest", "SERVED_LOCAL", "SERVED_REMOTE", "RAN_REMOTELY"]

# What served a cached ExecutionRecord, or ran one that was not (`pyimg explain` says which).
SERVED_LOCAL = "local"
SERVED_REMOTE = "remote"
RAN_REMOTELY = "remote-exec"


@dataclass(frozen=True)
class RemoteRequest:
    """One action as a remote cache needs it: its pyimg key and components, and every input
    file by exec path (the files of an input directory as "dir/rel"), with `input_dirs` naming
    the inputs that are whole directories (so that an empty one is still part of the tree)."""

    action: Action
    key: Digest
    components: Mapping[str, Any]
    inputs: Mapping[str, FileOutput]
    input_dirs: tuple[str, ...] = ()
    # Where the bytes of each input are on this machine (for remote execution to upload them).
    paths: Mapping[str, Path] = field(default_factory=dict)


class RemoteCache(Protocol):
    """Thread-safe: worker threads call it side by side. It never raises for a cache that is
    down, slow or wrong: it warns (once) and answers as a miss, so a build never fails for it."""

    def wants(self, action: Action) -> bool:
        """Whether `action` may be looked up and stored remotely (an action with secrets may not)."""
        ...

    def lookup(self, request: RemoteRequest) -> ActionResult | None:
        """The action's result with every output blob already in the local content store, or
        None (a miss, or a cache that failed)."""
        ...

    def upload(self, request: RemoteRequest, result: ActionResult) -> None:
        """Offer a result that ran locally (a read-only cache ignores it): its blobs first, then
        the action result, so that no remote entry ever names a blob the server lacks."""
        ...

    def executes(self, action: Action) -> bool:
        """Whether `action` runs remotely (--remote-executor) rather than here."""
        ...

    def execute(self, request: RemoteRequest) -> tuple[ActionResult, bool] | None:
        """Run the action remotely: its result with every output in the local store, and whether
        the server answered from its action cache instead of running it; or None to run it
        locally instead (--remote-local-fallback). Raises ActionFailedError for a command that
        failed, or for an executor that kept failing without the fallback."""
        ...
