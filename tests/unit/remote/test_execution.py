"""The remote cache and executor against fake stubs (the seams): an upload that fails never
writes the action-cache entry; Execute is retried with backoff, a broken stream is picked up with
WaitExecution, and the last failure fails the action or falls back locally."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from pyimg.core.action import KIND_RUN, Action
from pyimg.core.action_cache import ActionResult, FileOutput
from pyimg.core.digest import Digest
from pyimg.core.remote_cache import RemoteRequest
from pyimg.errors import ActionFailedError
from pyimg.remote._proto.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from pyimg.remote._proto.google.longrunning import operations_pb2
from pyimg.remote.cache import RemoteActionCache
from pyimg.remote.client import RemoteDataError
from pyimg.remote.execution import RemoteExecution
from pyimg.remote.options import RemoteOptions

HEX = "a" * 64


class _Error(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "down"


class _Client:
    def __init__(self, options: RemoteOptions, fail_upload: BaseException | None = None) -> None:
        self.options = options
        self.instance = ""
        self.metadata = ()
        self.fail_upload = fail_upload
        self.calls: list[str] = []
        self.cas = _Store()

    def upload(self, blobs: list[Any]) -> None:
        self.calls.append("upload")
        if self.fail_upload is not None:
            raise self.fail_upload

    def update_action_result(self, digest: Any, result: Any) -> None:
        self.calls.append("update")

    def download(self, files: Any) -> None:
        self.calls.append(f"download {len(list(files))}")


class _Store:
    def path(self, digest: Digest, executable: bool = False) -> Path:
        return Path("/nonexistent") / digest.hex


def _request() -> tuple[RemoteRequest, ActionResult]:
    action = Action(kind=KIND_RUN, outputs=("p/o",), argv=("true",), owner="//p:o",
                    mnemonic="Genrule", origin="p/BUILD.pyimg:1:1")
    out = FileOutput(Digest("sha256", HEX), 3, False)
    return (RemoteRequest(action, Digest("sha256", HEX), {}, {}, (), {}),
            ActionResult({"p/o": out}, {}))


@pytest.mark.parametrize("failure", [RemoteDataError("refused"), _Error(grpc.StatusCode.UNAVAILABLE)])
def test_a_failed_upload_never_writes_the_entry(failure):
    warnings: list[str] = []
    client = _Client(RemoteOptions("grpc://x:1"), fail_upload=failure)
    cache = RemoteActionCache(client, "fmt", warnings.append)  # type: ignore[arg-type]
    request, result = _request()
    cache.upload(request, result)
    assert client.calls == ["upload"] and len(warnings) == 1
    ok = _Client(RemoteOptions("grpc://x:1"))
    RemoteActionCache(ok, "fmt", warnings.append).upload(request, result)  # type: ignore[arg-type]
    assert ok.calls == ["upload", "update"]  # blobs first, the entry last


def _done(exit_code: int = 0) -> operations_pb2.Operation:
    response = re_pb2.ExecuteResponse(result=re_pb2.ActionResult(exit_code=exit_code))
    response.result.output_files.add(path="p/o", digest=re_pb2.Digest(hash=HEX, size_bytes=3))
    op = operations_pb2.Operation(name="op/1", done=True)
    op.response.Pack(response)
    return op


class _Execution:
    """Execute streams per `plan`: a list of ("op", Operation) or ("fail", code) per call."""

    def __init__(self, execute: list[list[Any]], wait: list[list[Any]] | None = None) -> None:
        self.execute, self.wait = execute, wait or []
        self.calls: list[str] = []

    @staticmethod
    def _stream(items: list[Any]):
        for item in items:
            if isinstance(item, grpc.StatusCode):
                raise _Error(item)
            yield item

    def Execute(self, request: Any, timeout: float, metadata: Any):  # noqa: N802 - gRPC's name
        self.calls.append("Execute")
        return self._stream(self.execute.pop(0))

    def WaitExecution(self, request: Any, timeout: float, metadata: Any):  # noqa: N802
        self.calls.append(f"WaitExecution {request.name}")
        return self._stream(self.wait.pop(0))


def _execution(stub: _Execution, fallback: bool = False):
    sleeps: list[float] = []
    warnings: list[str] = []
    options = RemoteOptions("grpc://x:1", executor="grpc://x:1", local_fallback=fallback)
    client = _Client(options)
    remote = RemoteExecution(client, stub, "fmt", warnings.append,  # type: ignore[arg-type]
                             sleep=sleeps.append)
    return remote, client, sleeps, warnings


def test_a_broken_stream_is_picked_up_with_wait_execution():
    running = operations_pb2.Operation(name="op/1")
    stub = _Execution([[running, grpc.StatusCode.UNAVAILABLE]], [[_done()]])
    remote, client, sleeps, _ = _execution(stub)
    request, expected = _request()
    assert remote.execute(request) == (expected, False)
    assert stub.calls == ["Execute", "WaitExecution op/1"] and sleeps == [0.5]
    assert client.calls == ["upload", "download 1"]


def test_unavailable_is_retried_with_backoff_then_fails_the_action():
    stub = _Execution([[grpc.StatusCode.UNAVAILABLE]] * 4)
    remote, _, sleeps, _ = _execution(stub)
    with pytest.raises(ActionFailedError) as e:
        remote.execute(_request()[0])
    assert sleeps == [0.5, 1.0, 2.0] and stub.calls == ["Execute"] * 4
    assert "failed after 4 attempts (UNAVAILABLE: down)" in str(e.value)
    assert e.value.origin == "p/BUILD.pyimg:1:1"


def test_a_permanent_error_is_not_retried_and_the_fallback_runs_locally():
    stub = _Execution([[grpc.StatusCode.PERMISSION_DENIED]])
    remote, _, sleeps, warnings = _execution(stub, fallback=True)
    assert remote.execute(_request()[0]) is None
    assert sleeps == [] and remote.fell_back == 1 and "runs locally" in warnings[0]


def test_a_command_that_failed_remotely_fails_with_its_output():
    op = _done(exit_code=3)
    response = re_pb2.ExecuteResponse()
    op.response.Unpack(response)
    response.result.stderr_raw = b"no luck\n"
    op.response.Pack(response)
    remote, _, _, _ = _execution(_Execution([[op]]))
    with pytest.raises(ActionFailedError) as e:
        remote.execute(_request()[0])
    assert "exited with code 3 (remotely" in str(e.value) and "no luck" in str(e.value)
