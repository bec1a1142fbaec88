"""The REAPI client: one gRPC channel, and the calls of the action cache, the CAS and ByteStream.

Blobs up to `BATCH_BLOB_BYTES` travel in batches (BatchUpdateBlobs, BatchReadBlobs) of at most
the server's `max_batch_total_size_bytes` (GetCapabilities; `BATCH_TOTAL_BYTES` when it names
none), larger ones through ByteStream in `CHUNK_BYTES` chunks. The small reads of all threads
share batches (remote/flow.py's `BatchReader`), and every unary call goes through a `CallGate`:
retried with bounded backoff while the server is busy, under a limit of calls in flight that
adapts to it. A write interrupted part way resumes where QueryWriteStatus says the
server got to. Every blob read is hashed as it is written to a temp file and refused unless its
digest and size match, before the content store sees it. Calls raise `grpc.RpcError` (and
`RemoteDataError` for bytes that do not match): remote/cache.py decides what a failure means.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc

from pyimg.core.cas import ContentStore
from pyimg.core.digest import Digest
from pyimg.errors import UsageError
from pyimg.remote._proto.build.bazel.remote.execution.v2 import (
    remote_execution_pb2 as re_pb2,
)
from pyimg.remote._proto.build.bazel.remote.execution.v2 import (
    remote_execution_pb2_grpc as re_grpc,
)
from pyimg.remote._proto.google.bytestream import bytestream_pb2 as bs_pb2
from pyimg.remote._proto.google.bytestream import bytestream_pb2_grpc as bs_grpc
from pyimg.remote.flow import PER_BLOB_BYTES, BatchReader, CallGate
from pyimg.remote.options import RemoteOptions, endpoint

__all__ = ["UploadBlob", "RemoteClient", "RemoteDataError", "open_channel"]

BATCH_BLOB_BYTES = 1 << 20
# A batch's bytes when the server names no limit: under gRPC's default 4 MiB message, with room
# for the digests and statuses beside the blobs.
BATCH_TOTAL_BYTES = 4 << 20
_BATCH_HEADROOM = 64 << 10
CHUNK_BYTES = 1 << 20
_WRITE_ATTEMPTS = 3
T = TypeVar("T")
# A transfer may take its size at this rate on top of the call timeout before it counts as slow.
_SLOWEST_BYTES_PER_SECOND = 5 << 20


class RemoteDataError(Exception):
    """The server sent bytes that are not what their digest says, or a malformed answer."""


@dataclass(frozen=True)
class UploadBlob:
    """A blob to upload: its digest and where its bytes are (a file, or bytes in memory)."""

    digest: re_pb2.Digest
    path: Path | None = None
    data: bytes | None = None

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.path is not None
        return self.path.read_bytes()

    def chunks(self, offset: int) -> Iterator[bytes]:
        if self.data is not None:
            for start in range(offset, max(len(self.data), offset + 1), CHUNK_BYTES):
                yield self.data[start:start + CHUNK_BYTES]
            return
        assert self.path is not None
        with open(self.path, "rb") as f:
            f.seek(offset)
            while chunk := f.read(CHUNK_BYTES):
                yield chunk


def open_channel(url: str, ca_file: str | None = None) -> grpc.Channel:
    """A channel to `url` (grpc:// or grpcs://): TLS with the CA file (or the system's roots)
    for grpcs://."""
    settings = [("grpc.max_receive_message_length", 64 << 20),
                ("grpc.max_send_message_length", 64 << 20)]
    if not url.startswith("grpcs://"):
        return grpc.insecure_channel(endpoint(url), options=settings)
    roots = None
    if ca_file is not None:
        try:
            roots = Path(ca_file).read_bytes()
        except OSError as e:
            raise UsageError(f"--remote-ca-file {ca_file}: {e.strerror}") from None
    return grpc.secure_channel(
        endpoint(url), grpc.ssl_channel_credentials(root_certificates=roots), options=settings)


class RemoteClient:
    """The calls pyimg makes, over one channel; thread-safe like the channel itself."""

    def __init__(self, channel: grpc.Channel, options: RemoteOptions, cas: ContentStore,
                 temp_dir: Path) -> None:
        self.options = options
        self.cas = cas
        self._temp_dir = temp_dir
        self.metadata = tuple(options.headers)
        # protoc's gRPC stubs carry no annotations (their messages do, in the .pyi files).
        self._ac = re_grpc.ActionCacheStub(channel)  # type: ignore[no-untyped-call]
        # (the same: an untyped generated stub)
        self._cas = re_grpc.ContentAddressableStorageStub(channel)  # type: ignore[no-untyped-call]
        # (the same: an untyped generated stub)
        self._bytestream = bs_grpc.ByteStreamStub(channel)  # type: ignore[no-untyped-call]
        # (the same: an untyped generated stub)
        self._capabilities = re_grpc.CapabilitiesStub(channel)  # type: ignore[no-untyped-call]
        self.instance = options.instance_name
        self.bytes_uploaded = 0
        self.bytes_downloaded = 0
        self.gate = CallGate()
        self.reader = BatchReader(self._batch_read, self.batch_limit)
        self._batch_bytes: int | None = None
        self._batch_lock = threading.Lock()

    def timeout_for(self, size: int = 0) -> float:
        return self.options.timeout + size / _SLOWEST_BYTES_PER_SECOND

    def batch_limit(self) -> int:
        """The bytes one batch may carry: the server's limit (GetCapabilities, asked once),
        less room for the digests beside the blobs; `BATCH_TOTAL_BYTES` when it names none."""
        with self._batch_lock:
            if self._batch_bytes is None:
                request = re_pb2.GetCapabilitiesRequest(instance_name=self.instance)
                try:
                    answer = self.gate.call(
                        self._capabilities.GetCapabilities, request, timeout=self.timeout_for(),
                        metadata=self.metadata)
                    server = answer.cache_capabilities.max_batch_total_size_bytes
                except grpc.RpcError:
                    server = 0  # a server without the call: the default, under gRPC's limit
                limit = min(server, BATCH_TOTAL_BYTES) if server > 0 else BATCH_TOTAL_BYTES
                self._batch_bytes = limit - min(_BATCH_HEADROOM, limit // 16)
            return self._batch_bytes

    # -- action cache -----------------------------------------------------------------------

    def batched(self, size: int) -> bool:
        """Whether a blob of `size` bytes travels in batches (else through ByteStream)."""
        return size <= BATCH_BLOB_BYTES and size + PER_BLOB_BYTES <= self.batch_limit()

    def get_action_result(self, digest: re_pb2.Digest,
                          inline: Sequence[str] = ()) -> re_pb2.ActionResult | None:
        """The entry of `digest`, or None. `inline`: output files whose bytes the server may
        put in the answer (REAPI lets it decline; BuildGrid does): no read for them then."""
        request = re_pb2.GetActionResultRequest(
            instance_name=self.instance, action_digest=digest, inline_stdout=False,
            inline_stderr=False, inline_output_files=list(inline))
        try:
            result: re_pb2.ActionResult = self.gate.call(
                self._ac.GetActionResult, request, timeout=self.timeout_for(),
                metadata=self.metadata)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return result

    def update_action_result(self, digest: re_pb2.Digest, result: re_pb2.ActionResult) -> None:
        request = re_pb2.UpdateActionResultRequest(
            instance_name=self.instance, action_digest=digest, action_result=result)
        self.gate.call(
            self._ac.UpdateActionResult, request, timeout=self.timeout_for(),
            metadata=self.metadata)

    # -- uploads ----------------------------------------------------------------------------

    def find_missing(self, digests: Iterable[re_pb2.Digest]) -> list[re_pb2.Digest]:
        unique = {(d.hash, d.size_bytes): d for d in digests}
        if not unique:
            return []
        request = re_pb2.FindMissingBlobsRequest(
            instance_name=self.instance, blob_digests=list(unique.values()))
        response = self.gate.call(
            self._cas.FindMissingBlobs, request, timeout=self.timeout_for(),
            metadata=self.metadata)
        return list(response.missing_blob_digests)

    def upload(self, blobs: Sequence[UploadBlob]) -> None:
        """Upload the blobs the server lacks; returns once the server holds every one of them
        (raises otherwise)."""
        by_hash = {b.digest.hash: b for b in blobs}
        missing = [by_hash[d.hash] for d in self.find_missing(b.digest for b in blobs)
                   if d.hash in by_hash]
        small = [b for b in missing if self.batched(b.digest.size_bytes)]
        for batch in _batches(small, lambda b: b.digest.size_bytes + PER_BLOB_BYTES,
                              self.batch_limit()):
            request = re_pb2.BatchUpdateBlobsRequest(instance_name=self.instance)
            for b in batch:
                request.requests.add(digest=b.digest, data=b.read())
            size = sum(b.digest.size_bytes for b in batch)
            response = self.gate.call(
                self._cas.BatchUpdateBlobs, request, timeout=self.timeout_for(size),
                metadata=self.metadata)
            failed = [r for r in response.responses if r.status.code != 0]
            if failed or len(response.responses) != len(batch):
                what = failed[0].status.message if failed else "responses missing"
                raise RemoteDataError(f"BatchUpdateBlobs refused {len(failed)} blob(s): {what}")
            self.bytes_uploaded += size
        for b in missing:
            if not self.batched(b.digest.size_bytes):
                self.write(b)

    def write(self, blob: UploadBlob) -> None:
        """One blob through ByteStream Write, resumed from the committed size after a failure."""
        d = blob.digest
        prefix = f"{self.instance}/" if self.instance else ""
        resource = f"{prefix}uploads/{uuid.uuid4()}/blobs/{d.hash}/{d.size_bytes}"
        offset = 0
        for attempt in range(_WRITE_ATTEMPTS):
            try:
                response = self._bytestream.Write(
                    _write_requests(blob, resource, offset),
                    timeout=self.timeout_for(d.size_bytes - offset), metadata=self.metadata)
                if response.committed_size != d.size_bytes:
                    raise RemoteDataError(
                        f"ByteStream Write of {d.hash} committed {response.committed_size} of "
                        f"{d.size_bytes} bytes")
                self.bytes_uploaded += d.size_bytes - offset
                return
            except grpc.RpcError as e:
                if attempt == _WRITE_ATTEMPTS - 1 or e.code() not in _RESUMABLE:
                    raise
                offset = self._committed(resource)
                if offset == d.size_bytes:
                    return

    def _committed(self, resource: str) -> int:
        try:
            status = self._bytestream.QueryWriteStatus(
                bs_pb2.QueryWriteStatusRequest(resource_name=resource),
                timeout=self.timeout_for(), metadata=self.metadata)
        except grpc.RpcError:
            return 0  # a server that cannot say: start again from the beginning
        committed: int = status.committed_size
        return committed

    # -- downloads --------------------------------------------------------------------------

    def read_bytes(self, digest: re_pb2.Digest) -> bytes:
        """A small blob (an output Tree), verified."""
        if self.batched(digest.size_bytes):
            key = (digest.hash, digest.size_bytes)
            try:
                data = self.reader.read([key])[key]
            except KeyError:
                raise RemoteDataError(f"blob {digest.hash} could not be read") from None
        else:
            data = b"".join(self._read_stream(digest))
        _check(digest, hashlib.sha256(data).hexdigest(), len(data))
        self.bytes_downloaded += len(data)
        return data

    def download(self, files: Iterable[tuple[Digest, int, bool]],
                 inlined: Mapping[tuple[str, int], bytes] | None = None) -> None:
        """Put each (digest, size, executable) the local store lacks into it, verified; the
        bytes of those in `inlined` (by (hash, size): the server sent them in its answer) are
        not read again."""
        wanted = sorted({f for f in files if not self.cas.verify(f[0], f[2])})
        if inlined:
            for digest, size, executable in wanted:
                data = inlined.get((digest.hex, size))
                if data is not None:
                    self._store_bytes(digest, size, executable, data)
            wanted = [f for f in wanted if (f[0].hex, f[1]) not in inlined]
        small = [f for f in wanted if self.batched(f[1])]
        if small:
            # Shared with the other threads' reads: one call carries many lookups' blobs.
            try:
                got = self.reader.read([(digest.hex, size) for digest, size, _ in small])
            except KeyError as e:
                raise RemoteDataError(f"blob sha256:{e.args[0][0]} is not in the remote "
                                      "cache") from None
            for digest, size, executable in small:
                self._store_bytes(digest, size, executable, got[(digest.hex, size)])
        for digest, size, executable in wanted:
            if not self.batched(size):
                d = re_pb2.Digest(hash=digest.hex, size_bytes=size)
                self._store(digest, size, executable, self._read_stream(d))

    def _batch_read(self, keys: Sequence[tuple[str, int]]) -> dict[tuple[str, int], bytes]:
        """One BatchReadBlobs of `keys` (BatchReader's `send`): the bytes of those found."""
        request = re_pb2.BatchReadBlobsRequest(instance_name=self.instance)
        for hash_, size in keys:
            request.digests.add(hash=hash_, size_bytes=size)
        total = sum(size for _, size in keys)
        response = self.gate.call(
            self._cas.BatchReadBlobs, request, timeout=self.timeout_for(total),
            metadata=self.metadata)
        return {(r.digest.hash, r.digest.size_bytes): r.data for r in response.responses
                if r.status.code == 0}

    def _read_stream(self, digest: re_pb2.Digest) -> Iterator[bytes]:
        prefix = f"{self.instance}/" if self.instance else ""
        request = bs_pb2.ReadRequest(
            resource_name=f"{prefix}blobs/{digest.hash}/{digest.size_bytes}")
        for response in self._bytestream.Read(request, timeout=self.timeout_for(digest.size_bytes),
                                              metadata=self.metadata):
            yield response.data

    def _store_bytes(self, digest: Digest, size: int, executable: bool, data: bytes) -> None:
        """A small blob already in memory: refused unless it is `digest`'s bytes, then written
        to the store once (no temp file of our own to link from, as `_store` needs)."""
        _check(re_pb2.Digest(hash=digest.hex, size_bytes=size), hashlib.sha256(data).hexdigest(),
               len(data))
        self.cas.put_bytes(data, executable)
        self.bytes_downloaded += size

    def _store(self, digest: Digest, size: int, executable: bool,
               chunks: Iterable[bytes]) -> None:
        """Write `chunks` to a temp file hashing them, refuse them unless they are `digest`'s
        bytes, then hand the file to the content store (linked, not copied)."""
        self._temp_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._temp_dir, prefix=".remote-")
        try:
            h = hashlib.sha256()
            written = 0
            with os.fdopen(fd, "wb") as f:
                for chunk in chunks:
                    h.update(chunk)
                    written += len(chunk)
                    if written > size:
                        break
                    f.write(chunk)
            _check(re_pb2.Digest(hash=digest.hex, size_bytes=size), h.hexdigest(), written)
            os.chmod(tmp, 0o755 if executable else 0o644)
            self.cas.put_file(Path(tmp), known=digest, link=True)
            self.bytes_downloaded += size
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass


_RESUMABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
              grpc.StatusCode.ABORTED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
              grpc.StatusCode.CANCELLED, grpc.StatusCode.RESOURCE_EXHAUSTED)


def _write_requests(blob: UploadBlob, resource: str, offset: int) -> Iterator[bs_pb2.WriteRequest]:
    size = blob.digest.size_bytes
    position = offset
    first = True
    for chunk in blob.chunks(offset):
        position += len(chunk)
        yield bs_pb2.WriteRequest(resource_name=resource if first else "", write_offset=
                                  position - len(chunk), data=chunk, finish_write=position >= size)
        first = False
    if position < size:
        raise RemoteDataError(f"{blob.path} changed while it was uploaded")


def _check(digest: re_pb2.Digest, got_hash: str, got_size: int) -> None:
    if got_hash != digest.hash or got_size != digest.size_bytes:
        raise RemoteDataError(
            f"blob sha256:{digest.hash} ({digest.size_bytes} bytes) came back as "
            f"sha256:{got_hash} ({got_size} bytes)")


def _batches(items: Sequence[T], size: Callable[[T], int], limit: int) -> Iterator[list[T]]:
    batch: list[T] = []
    total = 0
    for item in items:
        n = size(item)
        if batch and total + n > limit:
            yield batch
            batch, total = [], 0
        batch.append(item)
        total += n
    if batch:
        yield batch
