"""The remote action cache behind the executor's seam (core/remote_cache.py), and its failures.

A lookup is GetActionResult on the action's REAPI digest (remote/mapping.py), asking the server
to inline the output files' bytes (a server that does saves a read), then every output blob the
local store lacks, downloaded and verified; only a result whose outputs are
exactly the action's declared ones, all present, is a hit. An upload sends the outputs (and the
output Trees) the server lacks, then UpdateActionResult: the entry is written only after every
blob it names is on the server. The Action, the Command and the inputs are not uploaded: only an
executor reads them (remote/execution.py sends them).

The cache never fails a build (docs/remote.md, "When the cache fails"): a busy server is waited
for (remote/flow.py), and the first call that fails even so (down, slow past --remote-timeout,
refused) makes it warn once and stand aside for the rest of
the build, which goes on locally; a blob whose bytes do not match its digest is refused, warned
about, and the action runs locally. `summary()` says what happened, for the build's last line.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path

import grpc

from pyimg.core.action import Action
from pyimg.core.action_cache import ActionResult, FileOutput
from pyimg.core.cas import ContentStore
from pyimg.core.digest import Digest
from pyimg.core.remote_cache import RemoteRequest
from pyimg.remote._proto.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from pyimg.remote.client import RemoteClient, RemoteDataError, UploadBlob, open_channel
from pyimg.remote.mapping import MappedAction, file_digest, map_action, output_tree, tree_files
from pyimg.remote.options import RemoteOptions

__all__ = ["RemoteActionCache", "open_remote_cache"]


class RemoteActionCache:
    """`RemoteCache` over REAPI. `warn` prints a warning once per distinct message."""

    def __init__(self, client: RemoteClient, format_version: str,
                 warn: Callable[[str], None], close: Callable[[], None] = lambda: None) -> None:
        self.client = client
        self.options = client.options
        self.format_version = format_version
        self._warn = warn
        self._close = close
        self._lock = threading.Lock()
        self._down: str | None = None  # why the cache stood aside
        self.hits = 0
        self.misses = 0
        self.uploads = 0
        self.refused = 0  # results refused for bad bytes or shapes
        # The mapping of each action that missed, by pyimg key, until its upload: the input
        # root is built once per action, not once for the lookup and again for the upload.
        self._missed: dict[str, MappedAction] = {}

    def close(self) -> None:
        self._close()

    @property
    def down(self) -> str | None:
        return self._down

    def wants(self, action: Action) -> bool:
        # Secrets never leave the machine, nor their keyed hashes (docs/remote.md, "Secrets"):
        # an action with secrets is cached remotely only when its rule opts in, and its remote
        # key (remote/mapping.py) holds no keyed hash of them.
        return self._down is None and (not action.secrets or action.remote_cache_secrets)

    def executes(self, action: Action) -> bool:
        return False  # a cache only (remote/execution.py runs actions remotely)

    def execute(self, request: RemoteRequest) -> tuple[ActionResult, bool] | None:
        return None

    def _map(self, request: RemoteRequest) -> MappedAction:
        with self._lock:
            mapped = self._missed.pop(request.key.hex, None)
        if mapped is not None:
            return mapped
        return map_action(request.action, request.components, request.inputs,
                          request.input_dirs, self.format_version)

    def _keep(self, request: RemoteRequest, mapped: MappedAction) -> None:
        """Keep the mapping of an action that missed for its upload (`_map` takes it back)."""
        if self.options.upload:
            with self._lock:
                self._missed[request.key.hex] = mapped

    def lookup(self, request: RemoteRequest) -> ActionResult | None:
        if self._down is not None:
            return None
        mapped = self._map(request)
        try:
            remote = self.client.get_action_result(mapped.digest, inline=request.action.outputs)
            if remote is None or remote.exit_code != 0:
                self._count("misses")
                self._keep(request, mapped)
                return None
            result = self._local_result(request.action, remote)
            # Bytes the server put in its answer (verified like any others, when stored).
            inlined = {(f.digest.hash, f.digest.size_bytes): f.contents
                       for f in remote.output_files
                       if f.digest.size_bytes and len(f.contents) == f.digest.size_bytes}
            self.client.download(
                ((f.digest, f.size, f.executable) for f in result.all_files()), inlined)
        except grpc.RpcError as e:
            self._stand_aside(e)
            return None
        except (RemoteDataError, ValueError) as e:
            self._count("refused")
            self._warn(f"remote cache {self.options.cache}: refused the result of "
                       f"{request.action.describe()} ({e}); it runs locally")
            return None
        self._count("hits")
        return result

    def _local_result(self, action: Action, remote: re_pb2.ActionResult) -> ActionResult:
        """The remote result as pyimg's, or ValueError unless its outputs are exactly the
        action's declared ones."""
        files = {f.path: FileOutput(Digest("sha256", f.digest.hash), f.digest.size_bytes,
                                    f.is_executable) for f in remote.output_files}
        if remote.output_symlinks or remote.output_file_symlinks or \
                remote.output_directory_symlinks:
            raise ValueError("the result holds symlinks, which pyimg never outputs")
        dirs: dict[str, dict[str, FileOutput]] = {}
        for d in remote.output_directories:
            tree = re_pb2.Tree.FromString(self.client.read_bytes(d.tree_digest))
            dirs[d.path] = tree_files(tree)
        if set(files) != set(action.outputs) or set(dirs) != set(action.output_dirs):
            raise ValueError("its outputs are not the ones the action declares")
        return ActionResult(files, dirs)

    def upload(self, request: RemoteRequest, result: ActionResult) -> None:
        if self._down is not None or not self.options.upload:
            return
        mapped = self._map(request)
        # Only what the entry names: the outputs and their Trees. The Action, the Command and
        # the input root are what an executor reads; a cache keyed by the Action's digest
        # never does, so they stay home (as Bazel's uploads do), and the inputs with them.
        blobs: list[UploadBlob] = []
        remote = re_pb2.ActionResult(exit_code=0)
        for path, f in sorted(result.files.items()):
            remote.output_files.add(path=path, digest=file_digest(f), is_executable=f.executable)
            blobs.append(self._blob(f))
        for path, tree in sorted(result.dirs.items()):
            _, data = output_tree(tree)
            digest = re_pb2.Digest(hash=_sha256(data), size_bytes=len(data))
            remote.output_directories.add(path=path, tree_digest=digest)
            blobs.append(UploadBlob(digest, data=data))
            blobs.extend(self._blob(f) for f in tree.values())
        try:
            self.client.upload(blobs)
            # Last: the entry names only blobs the server now holds.
            self.client.update_action_result(mapped.digest, remote)
        except grpc.RpcError as e:
            self._stand_aside(e)
            return
        except (RemoteDataError, OSError) as e:
            self._warn(f"remote cache {self.options.cache}: could not upload the result of "
                       f"{request.action.describe()} ({e})")
            return
        self._count("uploads")

    def _blob(self, f: FileOutput) -> UploadBlob:
        return UploadBlob(file_digest(f), path=self.client.cas.path(f.digest, f.executable))

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def _stand_aside(self, error: grpc.RpcError) -> None:
        code = error.code()
        details = error.details() or ""
        hint = ""
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            hint = " (check the token given with --remote-header)"
        elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
            hint = f" (no answer within --remote-timeout={self.options.timeout:g}s)"
        why = f"{code.name}: {details}{hint}" if details else f"{code.name}{hint}"
        with self._lock:
            if self._down is not None:
                return
            self._down = why
        self._warn(f"remote cache {self.options.cache} failed ({why}); this build goes on with "
                   "the local cache only")

    def summary(self) -> str:
        """One line for the end of the build."""
        sent = self.client.bytes_uploaded
        up = "" if not self.options.upload else f", {self.uploads} results uploaded ({sent} bytes)"
        line = (f"remote cache {self.options.cache}: {self.hits} hits, {self.misses} misses"
                f"{up}")
        if self.refused:
            line += f", {self.refused} results refused"
        if self._down is not None:
            line += f"; unavailable since it failed ({self._down}): the rest ran locally"
        return line


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def open_remote_cache(options: RemoteOptions, cas: ContentStore, temp_dir: Path,
                      format_version: str, warn: Callable[[str], None]) -> RemoteActionCache:
    """A remote cache over a new channel; `close()` closes the channel."""
    channel = open_channel(options.cache, options.ca_file)
    client = RemoteClient(channel, options, cas, temp_dir)
    return RemoteActionCache(client, format_version, warn, channel.close)
