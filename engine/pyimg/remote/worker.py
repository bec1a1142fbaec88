"""`pyimg worker`: a bot of an REAPI server's scheduler (BuildGrid), over the Remote Workers API.

The worker is not a scheduler: it opens a bot session (CreateBotSession) and keeps it
(UpdateBotSession, which the server holds open until it has work or wants an answer). For each
lease it reads the Action (the lease's payload, or its digest), the Command and the input root,
downloads the input files it lacks into its own content store (verified), runs the command in
pyimg's own sandbox (core/executor.py, as a local build runs it: staged read-only inputs, a
scrubbed environment, PATH from the declared tools, no network, outputs checked), uploads the
outputs and answers the lease with the ActionResult. The server writes its action cache.

The command comes from pyimg's mapping (remote/mapping.py): `pyimg-tools` and
`pyimg-host-tools` platform properties say which inputs make PATH and which host tools the
command runs; a host tool whose digest differs on this machine fails the lease
(FAILED_PRECONDITION) rather than giving another result.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from pyimg.core.action import KIND_RUN, Action
from pyimg.core.action_cache import ActionCache, ActionResult, FileOutput
from pyimg.core.cas import ContentStore
from pyimg.core.digest import Digest
from pyimg.core.executor import ActionExecutor, BuildContext
from pyimg.core.file_digests import FileDigestCache
from pyimg.core.tool_identity import ToolSpec, tool_identity, tool_specs
from pyimg.errors import PyimgError
from pyimg.remote._proto.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from pyimg.remote._proto.google.devtools.remoteworkers.v1test2 import bots_pb2, worker_pb2
from pyimg.remote._proto.google.devtools.remoteworkers.v1test2 import (
    bots_pb2_grpc as bots_grpc,
)
from pyimg.remote._proto.google.rpc import status_pb2
from pyimg.remote.client import RemoteClient, RemoteDataError, UploadBlob, open_channel
from pyimg.remote.mapping import file_digest, output_tree
from pyimg.remote.options import RemoteOptions

__all__ = ["BotWorker", "WorkerOptions", "run_bots"]

# How long one UpdateBotSession may wait for work before the worker asks again.
_POLL_SECONDS = 20.0
_FIRST_BACKOFF_SECONDS = 0.5
_MAX_BACKOFF_SECONDS = 30.0
# How often a waiting call looks at `stop` (SIGTERM): the bound on how long stopping takes.
_STOP_POLL_SECONDS = 0.2
_RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED, grpc.StatusCode.INTERNAL,
            grpc.StatusCode.UNKNOWN, grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.CANCELLED)
_EXIT_CODE = re.compile(r"exited with code (\d+)")
_FAILED_PRECONDITION = 9
_INTERNAL = 13


@dataclass(frozen=True)
class WorkerOptions:
    """`remote`: the server (its CAS and Bots service); `cache_dir`: this worker's content store
    and sandbox scratch space; `bot_id`: how the server names this bot."""

    remote: RemoteOptions
    cache_dir: Path
    bot_id: str = ""


class BotWorker:
    """One bot session, one lease at a time. `run()` returns when `stop` is set: promptly, a
    running command killed and its lease abandoned (the server gives it out again)."""

    def __init__(self, options: WorkerOptions, log: Callable[[str], None] = print,
                 stop: threading.Event | None = None) -> None:
        self.options = options
        self.log = log
        self.stop = stop or threading.Event()
        self.leases_done = 0
        remote = options.remote
        self._channel = open_channel(remote.cache, remote.ca_file)
        self._cas = ContentStore(options.cache_dir)
        self._client = RemoteClient(self._channel, remote, self._cas, options.cache_dir / "tmp")
        # protoc's gRPC stubs carry no annotations (their messages do, in the .pyi files).
        self._bots = bots_grpc.BotsStub(self._channel)  # type: ignore[no-untyped-call]
        self._bot_id = options.bot_id or f"pyimg-{socket.gethostname()}-{os.getpid()}"

    def close(self) -> None:
        self._channel.close()

    def run(self) -> None:
        """Serve leases until `stop` is set. A server that goes away is waited for (backoff up
        to `_MAX_BACKOFF_SECONDS`); a session it no longer knows is opened again (a lease in
        flight is then the server's to give out again)."""
        session: bots_pb2.BotSession | None = None
        backoff = _FIRST_BACKOFF_SECONDS
        while not self.stop.is_set():
            try:
                if session is None:
                    session = self._open_session()
                for lease in session.leases:
                    if lease.state == bots_pb2.PENDING:
                        lease.state = bots_pb2.ACTIVE  # accepted: it runs now, then is answered
                    if lease.state == bots_pb2.ACTIVE:
                        self._work(lease)
                # Answers the leases (a COMPLETED one stays in the session until the server's
                # reply drops it) and waits for work.
                session = self._update(session) or session
                backoff = _FIRST_BACKOFF_SECONDS
            except _Stopped:
                break
            except grpc.RpcError as e:
                code = e.code()
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    continue  # no work within the poll: ask again with the same session
                if code == grpc.StatusCode.NOT_FOUND:
                    session = None
                elif code not in _RETRIED:
                    raise
                self.log(f"pyimg worker {self._bot_id}: {code.name} ({e.details()}); trying "
                         f"again in {backoff:g}s")
                self.stop.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_SECONDS)
        if session is not None:
            self._abandon(session)

    def _update(self, session: bots_pb2.BotSession) -> bots_pb2.BotSession | None:
        """UpdateBotSession, given up as soon as `stop` is set (the server holds the call open
        for up to `_POLL_SECONDS` when it has no work): raises _Stopped then."""
        call = self._bots.UpdateBotSession.future(
            bots_pb2.UpdateBotSessionRequest(name=session.name, bot_session=session),
            timeout=_POLL_SECONDS, metadata=self._client.metadata)
        while not call.done():
            if self.stop.wait(_STOP_POLL_SECONDS):
                call.cancel()
                raise _Stopped
        updated: bots_pb2.BotSession = call.result()
        return updated

    def _abandon(self, session: bots_pb2.BotSession) -> None:
        """Give the server back what this bot holds: a new session under the same bot id makes
        the scheduler close the old one and queue its unfinished leases again (BuildGrid does,
        as for a bot that restarted); its status BOT_TERMINATING asks for no more work."""
        unfinished = [lease.id for lease in session.leases if lease.state != bots_pb2.COMPLETED]
        try:
            self._bots.CreateBotSession(
                bots_pb2.CreateBotSessionRequest(
                    parent=self.options.remote.instance_name,
                    bot_session=bots_pb2.BotSession(
                        bot_id=self._bot_id, status=bots_pb2.BOT_TERMINATING,
                        worker=worker_pb2.Worker(
                            devices=[worker_pb2.Device(handle=self._bot_id)]))),
                timeout=min(self.options.remote.timeout, 10.0), metadata=self._client.metadata)
        except grpc.RpcError as e:
            self.log(f"pyimg worker {self._bot_id}: could not hand back its session "
                     f"({e.code().name}); the server gives its leases out again when the session "
                     "expires")
            return
        if unfinished:
            self.log(f"pyimg worker {self._bot_id}: stopped; lease {', '.join(unfinished)} "
                     "handed back to the server")

    def _open_session(self) -> bots_pb2.BotSession:
        session: bots_pb2.BotSession = self._bots.CreateBotSession(
            bots_pb2.CreateBotSessionRequest(
                parent=self.options.remote.instance_name,
                bot_session=bots_pb2.BotSession(
                    bot_id=self._bot_id, status=bots_pb2.OK,
                    worker=worker_pb2.Worker(devices=[worker_pb2.Device(handle=self._bot_id)]))),
            timeout=self.options.remote.timeout, metadata=self._client.metadata)
        self.log(f"pyimg worker {self._bot_id}: bot session {session.name} on "
                 f"{self.options.remote.cache}")
        return session

    def _work(self, lease: bots_pb2.Lease) -> None:
        """Run one lease and fill in its result and state (COMPLETED). _Stopped when `stop` was
        set before or while it ran (its command is killed; the lease stays unanswered)."""
        if self.stop.is_set():
            raise _Stopped
        self.log(f"pyimg worker {self._bot_id}: lease {lease.id}")
        try:
            result = self._execute(lease)
            lease.result.Pack(result)
            lease.status.CopyFrom(status_pb2.Status(code=0))
        except _LeaseError as e:
            lease.status.CopyFrom(status_pb2.Status(code=e.code, message=str(e)))
        except (grpc.RpcError, RemoteDataError, OSError, ValueError) as e:
            lease.status.CopyFrom(status_pb2.Status(code=_INTERNAL, message=str(e)))
        if self.stop.is_set():
            raise _Stopped  # what ran was cut short: no answer rather than a wrong one
        lease.state = bots_pb2.COMPLETED
        self.leases_done += 1

    def _execute(self, lease: bots_pb2.Lease) -> re_pb2.ActionResult:
        message = re_pb2.Action()
        if not lease.payload.Unpack(message):
            digest = re_pb2.Digest()
            if not lease.payload.Unpack(digest):
                raise _LeaseError(_INTERNAL, "the lease holds neither an Action nor its digest")
            message = re_pb2.Action.FromString(self._client.read_bytes(digest))
        command = re_pb2.Command.FromString(self._client.read_bytes(message.command_digest))
        files, empty_dirs = self._input_tree(message.input_root_digest)
        self._client.download((f.digest, f.size, f.executable) for f in files.values())
        action = _action(command, files, empty_dirs)
        self._check_host_tools(action, command)
        executor = self._executor(files)
        # Staged as input directories with no files, so that the sandbox holds them too.
        executor.record_result(Action(kind=KIND_RUN, outputs=(), output_dirs=empty_dirs),
                               ActionResult({}, {d: {} for d in empty_dirs}))
        scratch = self.options.cache_dir / "scratch" / lease.id.replace("/", "_")
        try:
            result = executor.run_uncached(action, scratch)
        except PyimgError as e:
            code = _EXIT_CODE.search(e.message)
            return re_pb2.ActionResult(exit_code=int(code.group(1)) if code else 1,
                                       stderr_raw=e.message.encode())
        return self._upload(result)

    def _input_tree(self, root: re_pb2.Digest) -> tuple[dict[str, FileOutput], tuple[str, ...]]:
        """The input root's files by exec path, and its empty directories (an input directory
        that holds no file is still an input: REAPI's Directory messages carry it)."""
        files: dict[str, FileOutput] = {}
        empty: list[str] = []
        pending = [("", root)]
        while pending:
            prefix, digest = pending.pop()
            directory = re_pb2.Directory.FromString(self._client.read_bytes(digest))
            if directory.symlinks:
                raise _LeaseError(_INTERNAL, "input symlinks are not supported")
            if prefix and not directory.files and not directory.directories:
                empty.append(prefix.rstrip("/"))
            for f in directory.files:
                files[prefix + f.name] = FileOutput(Digest("sha256", f.digest.hash),
                                                    f.digest.size_bytes, f.is_executable)
            for d in directory.directories:
                pending.append((f"{prefix}{d.name}/", d.digest))
        return files, tuple(sorted(empty))

    def _executor(self, files: dict[str, FileOutput]) -> ActionExecutor:
        root = self.options.cache_dir

        def source(path: str) -> Path:
            f = files[path]
            return self._cas.path(f.digest, f.executable)

        ctx = BuildContext(workspace=root / "inputs", cache_root=root,
                           scratch_root=root / "scratch", format_version="",
                           builtins={}, source_root=source, warn=self.log,
                           cancel=self.stop)  # a stopping worker kills the running command
        return ActionExecutor(ctx, self._cas, ActionCache(root, self._cas), FileDigestCache(None))

    def _check_host_tools(self, action: Action, command: re_pb2.Command) -> None:
        wanted = {p.name: p.value for p in command.platform.properties}.get("pyimg-host-tools")
        if not wanted:
            return
        # The client keys a host tool by its identity (core/tool_identity.py), not its bytes
        # alone: the same identity made from this worker's files is what must match.
        digests = FileDigestCache(None)
        specs = {spec.path: spec for spec in tool_specs(action)}
        for path, digest in json.loads(wanted).items():
            try:
                here = str(tool_identity(specs.get(path, ToolSpec(path)),
                                         digests.digest_and_mode).digest)
            except OSError:
                here = "missing"
            if here != digest:
                raise _LeaseError(_FAILED_PRECONDITION,
                                  f"host tool {path} is {here} on this worker, not {digest}")

    def _upload(self, result: ActionResult) -> re_pb2.ActionResult:
        remote = re_pb2.ActionResult(exit_code=0)
        blobs: list[UploadBlob] = []
        for path, f in sorted(result.files.items()):
            remote.output_files.add(path=path, digest=file_digest(f), is_executable=f.executable)
            blobs.append(UploadBlob(file_digest(f), path=self._cas.path(f.digest, f.executable)))
        for path, tree in sorted(result.dirs.items()):
            _, data = output_tree(tree)
            digest = re_pb2.Digest(hash=_sha256(data), size_bytes=len(data))
            remote.output_directories.add(path=path, tree_digest=digest)
            blobs.append(UploadBlob(digest, data=data))
            blobs.extend(UploadBlob(file_digest(f), path=self._cas.path(f.digest, f.executable))
                         for f in tree.values())
        self._client.upload(blobs)
        return remote


class _Stopped(Exception):
    """`stop` was set: the worker hands its session back and returns."""


class _LeaseError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _action(command: re_pb2.Command, files: dict[str, FileOutput],
            empty_dirs: tuple[str, ...] = ()) -> Action:
    """The pyimg action a Command (from remote/mapping.py) stands for."""
    properties = {p.name: p.value for p in command.platform.properties}
    tools = tuple(json.loads(properties.get("pyimg-tools", "[]")))
    host_tools = tuple(sorted(json.loads(properties.get("pyimg-host-tools", "{}"))))
    specs = tuple((path, mode, tuple(data)) for path, mode, data
                  in json.loads(properties.get("pyimg-host-tool-specs", "[]")))
    outputs = tuple(command.output_files)
    output_dirs = tuple(command.output_directories)
    if not outputs and not output_dirs:  # a v2.1+ client that sets output_paths only
        outputs = tuple(command.output_paths)
    return Action(
        kind=KIND_RUN, outputs=outputs, output_dirs=output_dirs,
        inputs=tuple(sorted((set(files) | set(empty_dirs)) - set(tools))), tools=tools,
        argv=tuple(command.arguments),
        env=tuple((v.name, v.value) for v in command.environment_variables),
        host_tools=host_tools, host_tool_specs=specs, mnemonic="RemoteAction")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def run_bots(workers: list[BotWorker]) -> None:
    """Run each worker's session on a thread of its own until their shared `stop` is set, or
    one of them fails: then the others are stopped too, and its error is raised here.

    `pyimg worker --jobs N` is N bot sessions in one process, sharing one content store, rather
    than one session holding N leases: BuildGrid would give a session as many leases as the
    "capacity" its Worker declares, but answering one of them while the others run means
    cutting short the UpdateBotSession the server holds open, which can lose a lease it just
    assigned. N sessions need nothing of the server beyond what one does."""
    errors: list[BaseException] = []

    def serve(worker: BotWorker) -> None:
        try:
            worker.run()
        except BaseException as e:  # noqa: BLE001 - raised again on the calling thread
            errors.append(e)
            worker.stop.set()

    threads = [threading.Thread(target=serve, args=(w,), daemon=True) for w in workers]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(_STOP_POLL_SECONDS)  # a timed join lets Ctrl-C reach this thread
    except KeyboardInterrupt:
        for w in workers:
            w.stop.set()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
