"""A fake Transport for registry unit tests: scripted responses, recorded requests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pyimg.registry.transport import ConnectionFailed, Request
from requests.structures import CaseInsensitiveDict


@dataclass
class FakeResponse:
    status: int
    body: bytes = b""
    headers: CaseInsensitiveDict = field(default_factory=CaseInsensitiveDict)
    url: str = "http://fake/"
    # Raise ConnectionFailed after yielding this many bytes (a dropped connection).
    break_after: int | None = None
    closed: bool = False

    def iter_bytes(self, chunk_size: int) -> Iterator[bytes]:
        end = len(self.body) if self.break_after is None else self.break_after
        for i in range(0, end, chunk_size):
            yield self.body[i : min(i + chunk_size, end)]
        if self.break_after is not None:
            raise ConnectionFailed("connection broken while reading (fake)")

    def read(self, limit: int | None = None) -> bytes:
        data = b"".join(self.iter_bytes(1 << 16))
        self.close()
        return data

    def close(self) -> None:
        self.closed = True


def resp(status: int, body: bytes = b"", **headers: str) -> FakeResponse:
    h = CaseInsensitiveDict({k.replace("_", "-"): v for k, v in headers.items()})
    return FakeResponse(status, body, h)


class FakeTransport:
    """Answers each request with `handler(request)`; an exception instance is raised instead."""

    def __init__(self, handler: Callable[[Request], FakeResponse | Exception]) -> None:
        self.handler = handler
        self.requests: list[Request] = []

    def send(self, request: Request) -> FakeResponse:
        self.requests.append(request)
        if callable(request.body):
            with request.body() as f:
                f.read()
        out = self.handler(request)
        if isinstance(out, Exception):
            raise out
        return out


def scripted(*answers: FakeResponse | Exception) -> FakeTransport:
    """A transport that gives `answers` in order (then fails the test)."""
    queue = list(answers)

    def handler(request: Request) -> FakeResponse | Exception:
        assert queue, f"unexpected request {request.method} {request.url}"
        return queue.pop(0)

    return FakeTransport(handler)
