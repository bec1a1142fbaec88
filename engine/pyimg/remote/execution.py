"""Remote execution (--remote-executor): sandboxed commands run on an REAPI server's workers.

Which actions: `genrule` and `ctx.actions.run` commands without secrets or cache directories.
Built-in actions (layers, images, indexes, file writes) stay local: they read the local content
store and pulled base layers, and are bound by reading and compressing bytes that would
otherwise cross the network twice (docs/remote.md, "Remote execution").

An action runs remotely as REAPI says: its inputs, Action, Command and input-root Directories are
uploaded (only what the server lacks), then `Execute`, whose operation stream is followed to the
end; a stream that breaks is picked up again with `WaitExecution`. A call that fails for the
server's sake (unavailable, deadline, aborted) is retried with exponential backoff; after the
last attempt the action fails with the server's status, or runs locally with
--remote-local-fallback. The outputs are downloaded and verified like remote-cache hits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc

from pyimg.core.action import KIND_RUN, Action
from pyimg.core.action_cache import ActionResult
from pyimg.core.cas import ContentStore
from pyimg.core.remote_cache import RemoteRequest
from pyimg.errors import ActionFailedError
from pyimg.remote._proto.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from pyimg.remote._proto.build.bazel.remote.execution.v2 import (
    remote_execution_pb2_grpc as re_grpc,
)
from pyimg.remote._proto.google.longrunning import operations_pb2
from pyimg.remote.cache import RemoteActionCache
from pyimg.remote.client import RemoteClient, RemoteDataError, UploadBlob, open_channel
from pyimg.remote.options import RemoteOptions

__all__ = ["RemoteExecution", "open_remote_execution"]

ATTEMPTS = 4
_RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.ABORTED, grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
# How long one action may run remotely (queued included) before the wait counts as failed.
_EXECUTE_TIMEOUT_SECONDS = 3600.0


class RemoteExecution(RemoteActionCache):
    """A remote cache that also runs sandboxed commands remotely. `sleep` is the backoff's
    clock (a seam for tests)."""

    def __init__(self, client: RemoteClient, execution: re_grpc.ExecutionStub,
                 format_version: str, warn: Callable[[str], None],
                 close: Callable[[], None] = lambda: None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(client, format_version, warn, close)
        self._execution = execution
        self._sleep = sleep
        self.executed = 0
        self.fell_back = 0

    def wants(self, action: Action) -> bool:
        if action.secrets:
            return super().wants(action)  # cached with the opt-in, never executed remotely
        return self.down is None or self.executes(action)

    def executes(self, action: Action) -> bool:
        return action.kind == KIND_RUN and not action.secrets and not action.cache_dirs

    def lookup(self, request: RemoteRequest) -> ActionResult | None:
        if self.executes(request.action):
            return None  # Execute looks the action cache up itself (skip_cache_lookup=False)
        return super().lookup(request)

    def execute(self, request: RemoteRequest) -> tuple[ActionResult, bool] | None:
        action = request.action
        mapped = self._map(request)
        error: grpc.RpcError | RemoteDataError | None = None
        for attempt in range(ATTEMPTS):
            if attempt:
                self._sleep(self.options.retry_backoff * 2 ** (attempt - 1))
            try:
                self._upload_inputs(request, mapped.blobs)
                response = self._run(mapped.digest)
                return self._result(action, response), response.cached_result
            except grpc.RpcError as e:
                if e.code() not in _RETRIED:
                    error = e
                    break
                error = e
            except RemoteDataError as e:
                error = e
        assert error is not None
        why = (f"{error.code().name}: {error.details()}" if isinstance(error, grpc.RpcError)
               else str(error))
        if self.options.local_fallback:
            self._count("fell_back")
            self._warn(f"remote executor {self.options.executor} failed for "
                       f"{action.describe()} ({why}); it runs locally (--remote-local-fallback)")
            return None
        raise ActionFailedError(
            f"{action.describe()}: remote execution on {self.options.executor} failed after "
            f"{ATTEMPTS} attempts ({why}); --remote-local-fallback runs such actions locally",
            origin=action.origin)

    def _upload_inputs(self, request: RemoteRequest, messages: dict[str, bytes]) -> None:
        blobs = [UploadBlob(re_pb2.Digest(hash=h, size_bytes=len(data)), data=data)
                 for h, data in sorted(messages.items())]
        for path, f in sorted(request.inputs.items()):
            blobs.append(UploadBlob(re_pb2.Digest(hash=f.digest.hex, size_bytes=f.size),
                                    path=request.paths[path]))
        self.client.upload(blobs)

    def _run(self, digest: re_pb2.Digest) -> re_pb2.ExecuteResponse:
        request = re_pb2.ExecuteRequest(instance_name=self.client.instance, action_digest=digest,
                                        skip_cache_lookup=False)
        stream: Iterator[operations_pb2.Operation] = self._execution.Execute(
            request, timeout=_EXECUTE_TIMEOUT_SECONDS, metadata=self.client.metadata)
        name = ""
        for waits in range(ATTEMPTS):
            try:
                for operation in stream:
                    name = operation.name or name
                    if operation.done:
                        return _response(operation)
            except grpc.RpcError as e:
                if not name or e.code() not in _RETRIED or waits == ATTEMPTS - 1:
                    raise
                self._sleep(self.options.retry_backoff * 2 ** waits)
            if not name:
                break
            # The stream ended (or broke) before the operation was done: wait on it by name.
            stream = self._execution.WaitExecution(
                re_pb2.WaitExecutionRequest(name=name), timeout=_EXECUTE_TIMEOUT_SECONDS,
                metadata=self.client.metadata)
        raise RemoteDataError("the execution stream ended before the operation was done")

    def _result(self, action: Action, response: re_pb2.ExecuteResponse) -> ActionResult:
        if response.status.code != 0:
            code = grpc.StatusCode.UNKNOWN
            for c in grpc.StatusCode:
                if c.value[0] == response.status.code:
                    code = c
            raise _StatusError(code, response.status.message)
        remote = response.result
        if remote.exit_code != 0:
            output = self._output(remote)
            tail = output.decode("utf-8", "replace").splitlines()[-30:]
            lines = [f"{action.describe()} exited with code {remote.exit_code} (remotely, on "
                     f"{self.options.executor})", f"  mnemonic: {action.mnemonic}"]
            if tail:
                lines += ["  output (last lines):", *("    " + line for line in tail)]
            raise ActionFailedError("\n".join(lines), origin=action.origin)
        try:
            result = self._local_result(action, remote)
        except ValueError as e:
            raise RemoteDataError(str(e)) from None
        self.client.download((f.digest, f.size, f.executable) for f in result.all_files())
        self._count("hits" if response.cached_result else "executed")
        return result

    def _output(self, remote: re_pb2.ActionResult) -> bytes:
        out = remote.stdout_raw + remote.stderr_raw
        for digest in (remote.stdout_digest, remote.stderr_digest):
            if digest.hash and digest.size_bytes:
                try:
                    out += self.client.read_bytes(digest)
                except (grpc.RpcError, RemoteDataError):
                    pass  # the failure is reported with what there is
        return out

    def summary(self) -> str:
        line = f"remote executor {self.options.executor}: {self.executed} actions ran remotely"
        if self.fell_back:
            line += f", {self.fell_back} fell back to local"
        return f"{line}; {super().summary()}"


# grpc carries no types: RpcError is Any to mypy.
class _StatusError(grpc.RpcError):  # type: ignore[misc]
    """A failed ExecuteResponse status, raised like the call's own errors (retried alike)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def _response(operation: operations_pb2.Operation) -> re_pb2.ExecuteResponse:
    if operation.HasField("error"):
        code = next((c for c in grpc.StatusCode if c.value[0] == operation.error.code),
                    grpc.StatusCode.UNKNOWN)
        raise _StatusError(code, operation.error.message)
    response = re_pb2.ExecuteResponse()
    if not operation.response.Unpack(response):
        raise RemoteDataError("the operation's response is not an ExecuteResponse")
    return response


def open_remote_execution(options: RemoteOptions, cas: ContentStore, temp_dir: Path,
                          format_version: str, warn: Callable[[str], None]) -> RemoteExecution:
    """Remote execution on `options.executor`, with `options.cache` as its cache (one channel
    when they are the same endpoint)."""
    assert options.executor is not None
    execution_channel = open_channel(options.executor, options.ca_file)
    cache_channel = (execution_channel if options.cache == options.executor
                     else open_channel(options.cache, options.ca_file))

    def close() -> None:
        execution_channel.close()
        if cache_channel is not execution_channel:
            cache_channel.close()

    client = RemoteClient(cache_channel, options, cas, temp_dir)
    # protoc's gRPC stubs carry no annotations (their messages do, in the .pyi files).
    stub = re_grpc.ExecutionStub(execution_channel)  # type: ignore[no-untyped-call]
    return RemoteExecution(client, stub, format_version, warn, close)
