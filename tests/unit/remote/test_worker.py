"""The worker's bot-session loop against a fake Bots service: a lease is accepted, run and
answered; a server that is briefly unavailable gets the same answer again (a result is never
dropped); a session the server forgot is opened again."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from pyimg.remote import worker as worker_module
from pyimg.remote._proto.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from pyimg.remote._proto.google.devtools.remoteworkers.v1test2 import bots_pb2
from pyimg.remote.options import RemoteOptions
from pyimg.remote.worker import BotWorker, WorkerOptions


class _Error(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return "test"


class _Done:
    """A finished gRPC future: the worker's UpdateBotSession is an asynchronous call."""

    def __init__(self, call: Any, *args: Any, **kw: Any) -> None:
        try:
            self._value, self._error = call(*args, **kw), None
        except grpc.RpcError as e:
            self._value, self._error = None, e

    def done(self) -> bool:
        return True

    def cancel(self) -> bool:
        return False

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        return self._value


class _Bots:
    def __init__(self, worker: BotWorker) -> None:
        self.worker = worker
        self.created = 0
        self.statuses: list[int] = []
        self.sent: list[bots_pb2.BotSession] = []
        self.UpdateBotSession = type("Call", (), {"future": lambda _, *a, **k: _Done(
            self._update, *a, **k)})()

    def CreateBotSession(self, request: Any, timeout: float, metadata: Any):  # noqa: N802
        self.created += 1
        self.statuses.append(request.bot_session.status)
        return bots_pb2.BotSession(name=f"session{self.created}", bot_id=request.bot_session.bot_id)

    def _update(self, request: Any, timeout: float, metadata: Any):
        sent = bots_pb2.BotSession()
        sent.CopyFrom(request.bot_session)
        self.sent.append(sent)
        n = len(self.sent)
        if n == 1:  # work for the bot
            reply = bots_pb2.BotSession(name=sent.name)
            lease = reply.leases.add(id="lease1", state=bots_pb2.PENDING)
            lease.payload.Pack(re_pb2.Action())
            return reply
        if n == 2:
            raise _Error(grpc.StatusCode.UNAVAILABLE)
        if n == 3:
            raise _Error(grpc.StatusCode.NOT_FOUND)
        self.worker.stop.set()
        return bots_pb2.BotSession(name=sent.name)


def test_a_lease_is_answered_through_an_outage_and_a_lost_session(tmp_path, monkeypatch):
    monkeypatch.setattr(worker_module, "_FIRST_BACKOFF_SECONDS", 0.0)
    logs: list[str] = []
    worker = BotWorker(WorkerOptions(RemoteOptions("grpc://127.0.0.1:1"), tmp_path), logs.append)
    bots = _Bots(worker)
    worker._bots = bots
    ran: list[str] = []
    monkeypatch.setattr(worker, "_execute",
                        lambda lease: (ran.append(lease.id), re_pb2.ActionResult(exit_code=0))[1])
    try:
        worker.run()
    finally:
        worker.close()
    assert ran == ["lease1"]
    second, third = bots.sent[1], bots.sent[2]
    for answer in (second, third):  # the same answer again after UNAVAILABLE
        (lease,) = answer.leases
        assert lease.state == bots_pb2.COMPLETED and lease.status.code == 0
        assert lease.result.Is(re_pb2.ActionResult.DESCRIPTOR)
    assert bots.created == 3 and bots.sent[3].name == "session2"
    # Stopping, the worker hands its session back (the server queues what it held again).
    assert bots.statuses == [bots_pb2.OK, bots_pb2.OK, bots_pb2.BOT_TERMINATING]
    assert any("UNAVAILABLE" in line for line in logs)


def test_an_unexpected_error_stops_the_worker(tmp_path):
    worker = BotWorker(WorkerOptions(RemoteOptions("grpc://127.0.0.1:1"), tmp_path), print)

    class Refusing:
        def CreateBotSession(self, *a: Any, **k: Any):  # noqa: N802
            raise _Error(grpc.StatusCode.PERMISSION_DENIED)

    worker._bots = Refusing()
    with pytest.raises(grpc.RpcError):
        worker.run()
    worker.close()
