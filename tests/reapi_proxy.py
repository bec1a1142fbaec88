"""A gRPC proxy on loopback in front of a real REAPI server, for fault and auth tests.

It forwards every call's bytes unchanged, and the server's refusals with their own codes (a busy
BuildGrid answers RESOURCE_EXHAUSTED, which a client waits on; an error raised inside the proxy
would reach the client as UNKNOWN). What a test asks for changes that: `delay` holds every unary
call back (a slow server), `corrupt_reads` flips a byte in every blob BatchReadBlobs and
ByteStream Read return (the digests stay), `break_writes` cuts the first N ByteStream Write
streams after their first chunk, `busy` answers the first N calls of a method (by its short name,
"GetActionResult") with `busy_code` (RESOURCE_EXHAUSTED unless set) before it forwards any, and
`token` refuses calls whose `authorization` header is not `Bearer <token>`. `calls` counts the
calls of each method (short name) it forwarded. With `inline`, it does what BuildGrid does not:
fills in the bytes of the output files a GetActionResult asks to inline (read upstream; flipped
too with `corrupt_reads`). With `tls` it serves TLS with a throwaway CA (`ca_file`), and records
every header it saw in `seen_headers`.
"""

from __future__ import annotations

import datetime
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
from buildgrid import free_port

__all__ = ["Proxy"]

_READ_BLOBS = "/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchReadBlobs"
_GET_RESULT = "/build.bazel.remote.execution.v2.ActionCache/GetActionResult"
_BYTESTREAM = "/google.bytestream.ByteStream/"
_STREAM_REPLIES = {"/google.bytestream.ByteStream/Read"}
_STREAM_REQUESTS = {"/google.bytestream.ByteStream/Write"}


def _flip(data: bytes) -> bytes:
    return bytes([data[0] ^ 0xFF]) + data[1:] if data else data


class Proxy:
    def __init__(self, upstream: str, workdir: Path, tls: bool = False,
                 token: str | None = None) -> None:
        self.upstream = grpc.insecure_channel(upstream.split("://", 1)[1])
        self.port = free_port()
        self.token = token
        self.corrupt_reads = False
        self.delay = 0.0  # seconds every unary call waits before it is forwarded (a slow server)
        self.break_writes = 0
        self.broken_writes = 0
        self.busy: Counter[str] = Counter()  # calls left to refuse, by method
        self.busy_code = grpc.StatusCode.RESOURCE_EXHAUSTED
        self.calls: Counter[str] = Counter()
        self.inline = False
        self.seen_headers: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        self.server.add_generic_rpc_handlers([_Handler(self)])
        self.ca_file: Path | None = None
        if tls:
            key, cert = _self_signed()
            self.ca_file = workdir / "ca.pem"
            workdir.mkdir(parents=True, exist_ok=True)
            self.ca_file.write_bytes(cert)
            creds = grpc.ssl_server_credentials([(key, cert)])
            self.server.add_secure_port(f"127.0.0.1:{self.port}", creds)
        else:
            self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        self.tls = tls

    @property
    def url(self) -> str:
        return f"{'grpcs' if self.tls else 'grpc'}://localhost:{self.port}"

    def start(self) -> Proxy:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop(grace=None)
        self.upstream.close()

    def check(self, context: grpc.ServicerContext, method: str) -> list[tuple[str, str]]:
        metadata = [(k, v) for k, v in context.invocation_metadata()
                    if not k.startswith(("grpc-", ":", "user-agent"))]
        name = method.rsplit("/", 1)[1]
        with self._lock:
            self.seen_headers.extend(metadata)
            refuse = self.busy[name] > 0
            if refuse:
                self.busy[name] -= 1
            else:
                self.calls[name] += 1
        if self.token is not None and ("authorization", f"Bearer {self.token}") not in metadata:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid token")
        if refuse:
            context.abort(self.busy_code, "busy (the test proxy)")
        return metadata


class _Handler(grpc.GenericRpcHandler):
    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = details.method
        proxy = self.proxy
        channel = proxy.upstream

        def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
            metadata = proxy.check(context, method)
            if proxy.delay:
                time.sleep(proxy.delay)
            call = channel.unary_unary(method)
            try:
                reply: bytes = call(request, metadata=metadata)
                if method == _GET_RESULT and proxy.inline:
                    reply = _inlined(channel, request, reply, metadata, proxy.corrupt_reads)
            except grpc.RpcError as e:  # the server's own answer (a busy BuildGrid says so)
                context.abort(e.code(), e.details() or "")
            if method == _READ_BLOBS and proxy.corrupt_reads:
                from pyimg.remote._proto.build.bazel.remote.execution.v2 import (
                    remote_execution_pb2 as re_pb2,
                )

                message = re_pb2.BatchReadBlobsResponse.FromString(reply)
                for r in message.responses:
                    r.data = _flip(r.data)
                reply = message.SerializeToString()
            return reply

        def unary_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
            metadata = proxy.check(context, method)
            first = True
            try:
                for reply in channel.unary_stream(method)(request, metadata=metadata):
                    if proxy.corrupt_reads and first:
                        from pyimg.remote._proto.google.bytestream import bytestream_pb2

                        message = bytestream_pb2.ReadResponse.FromString(reply)
                        message.data = _flip(message.data)
                        reply = message.SerializeToString()
                    first = False
                    yield reply
            except grpc.RpcError as e:
                context.abort(e.code(), e.details() or "")

        def stream_unary(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
            metadata = proxy.check(context, method)
            cut = False
            with proxy._lock:
                if proxy.break_writes > proxy.broken_writes:
                    proxy.broken_writes += 1
                    cut = True

            def forward() -> Iterator[bytes]:
                for i, r in enumerate(requests):
                    if cut and i == 1:
                        return  # the stream ends early: the server holds one chunk
                    yield r

            try:
                reply: bytes = channel.stream_unary(method)(forward(), metadata=metadata)
            except grpc.RpcError as e:
                if not cut:
                    context.abort(e.code(), e.details() or "")
            if cut:  # what a client sees of a connection lost halfway
                context.abort(grpc.StatusCode.UNAVAILABLE, "connection cut by the test proxy")
            return reply

        if method in _STREAM_REPLIES:
            return grpc.unary_stream_rpc_method_handler(unary_stream)
        if method in _STREAM_REQUESTS:
            return grpc.stream_unary_rpc_method_handler(stream_unary)
        return grpc.unary_unary_rpc_method_handler(unary)


def _inlined(channel: grpc.Channel, request: bytes, reply: bytes,
             metadata: list[tuple[str, str]], corrupt: bool) -> bytes:
    """The GetActionResult `reply` with the bytes of the output files `request` asks to inline."""
    from pyimg.remote._proto.build.bazel.remote.execution.v2 import (
        remote_execution_pb2 as re_pb2,
    )

    asked = re_pb2.GetActionResultRequest.FromString(request)
    result = re_pb2.ActionResult.FromString(reply)
    wanted = [f for f in result.output_files if f.path in set(asked.inline_output_files)]
    if not wanted:
        return reply
    read = re_pb2.BatchReadBlobsRequest(instance_name=asked.instance_name,
                                        digests=[f.digest for f in wanted])
    got = re_pb2.BatchReadBlobsResponse.FromString(channel.unary_unary(_READ_BLOBS)(
        read.SerializeToString(), metadata=metadata))
    data = {r.digest.hash: r.data for r in got.responses if r.status.code == 0}
    for f in wanted:
        if f.digest.hash in data:
            f.contents = _flip(data[f.digest.hash]) if corrupt else data[f.digest.hash]
    return result.SerializeToString()


def _self_signed() -> tuple[bytes, bytes]:
    """A key and a self-signed certificate for localhost (the client trusts it as its CA)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)

