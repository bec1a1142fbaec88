"""The HTTP seam: a small Transport protocol, its requests-based implementation, and retries."""

from __future__ import annotations

import email.utils
import ipaddress
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, Protocol, TypeVar
from urllib.parse import urlsplit

from pyimg.errors import RegistryError

if TYPE_CHECKING:
    import requests  # imported where used: it costs start-up

__all__ = [
    "Body",
    "ConnectionFailed",
    "Request",
    "RequestsTransport",
    "Response",
    "RetryPolicy",
    "RetryableStatus",
    "Retrier",
    "Transport",
    "is_loopback",
    "parse_retry_after",
    "registry_url",
]

T = TypeVar("T")

# A request body: bytes, or a factory that opens a fresh stream per attempt (so a retry or an
# auth round-trip can resend it); the transport closes what the factory returns.
Body = bytes | Callable[[], BinaryIO] | None

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    # Excluded from equality: a factory has no meaningful identity.
    body: Body = field(default=None, compare=False)
    # Uploads must not follow redirects blindly (the body would be replayed to another host).
    follow_redirects: bool = True


class Response(Protocol):
    """A streamed response. The caller closes it (or reads it fully with `read`)."""

    status: int
    headers: Mapping[str, str]  # case-insensitive
    url: str

    def iter_bytes(self, chunk_size: int) -> Iterator[bytes]: ...
    def read(self, limit: int | None = None) -> bytes: ...
    def close(self) -> None: ...


class Transport(Protocol):
    def send(self, request: Request) -> Response:
        """Send one request. Raises ConnectionFailed when no HTTP response came back."""
        ...


class ConnectionFailed(Exception):
    """The connection failed before or while a response was read (retryable).

    The message is a short reason (an exception type), never a URL with its query or a header.
    """


class RetryableStatus(Exception):
    """A response status worth retrying (429, 5xx), with the server's Retry-After if any."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


class _RequestsResponse:
    def __init__(self, resp: requests.Response) -> None:
        self._resp = resp
        self.status: int = resp.status_code
        self.headers: Mapping[str, str] = resp.headers
        self.url: str = resp.url

    def iter_bytes(self, chunk_size: int) -> Iterator[bytes]:
        import requests

        try:
            yield from self._resp.iter_content(chunk_size)
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            # Includes a short body (urllib3 enforces Content-Length) and a dropped connection.
            raise ConnectionFailed(
                f"connection broken while reading ({type(exc).__name__})"
            ) from None
        except requests.Timeout:
            raise ConnectionFailed("read timed out") from None

    def read(self, limit: int | None = None) -> bytes:
        parts: list[bytes] = []
        total = 0
        try:
            for chunk in self.iter_bytes(1 << 16):
                parts.append(chunk)
                total += len(chunk)
                if limit is not None and total > limit:
                    raise RegistryError(
                        f"response from {_origin(self.url)} larger than {limit} bytes"
                    )
        finally:
            self.close()
        return b"".join(parts)

    def close(self) -> None:
        self._resp.close()


POOL_SIZE = 32  # kept-alive connections per registry host


class RequestsTransport:
    """The real transport on a `requests.Session` (connection pooling, TLS verification on)."""

    def __init__(
        self, session: requests.Session | None = None, timeout: tuple[float, float] = (10.0, 120.0)
    ) -> None:
        import requests

        if session is None:
            session = requests.Session()
            # http.client sends a file body in `blocksize` pieces, 8 KiB by default (16 KiB in
            # urllib3): far too small for layer uploads. 1 MiB pieces; pool sized for parallel
            # blob uploads overlapped with a signature's rounds, which for an index are one
            # batch per image it lists (signing/attach.py): a connection the pool cannot keep
            # is closed, and the next request pays a new handshake.
            adapter = requests.adapters.HTTPAdapter(pool_maxsize=POOL_SIZE)
            adapter.init_poolmanager(8, POOL_SIZE, block=False, blocksize=1 << 20)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        self._session = session
        # Proxies from the environment are honoured by requests; loopback must never be proxied.
        self._timeout = timeout

    def send(self, request: Request) -> Response:
        import requests

        body = request.body
        stream = body() if callable(body) else body
        try:
            resp = self._session.request(
                request.method,
                request.url,
                headers=dict(request.headers),
                data=stream,
                stream=True,
                timeout=self._timeout,
                allow_redirects=request.follow_redirects,
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise ConnectionFailed(type(exc).__name__) from None
        finally:
            if stream is not None and hasattr(stream, "close"):
                stream.close()
        return _RequestsResponse(resp)

    def close(self) -> None:
        self._session.close()


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter: delay_n = min(max_delay, base * multiplier**n) * (1 ± jitter).

    A server's Retry-After replaces the computed delay, capped at `max_retry_after`.
    """

    max_attempts: int = 5
    base_delay: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 20.0
    jitter: float = 0.25
    max_retry_after: float = 60.0

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """The pause after failed attempt number `attempt` (0-based)."""
        if retry_after is not None:
            return max(0.0, min(retry_after, self.max_retry_after))
        raw = min(self.max_delay, self.base_delay * self.multiplier**attempt)
        return raw * (1.0 + self.jitter * (2.0 * rng.random() - 1.0))


class Retrier:
    """Runs an operation under a RetryPolicy, with an injectable sleep and a seeded RNG.

    The operation signals a retryable failure by raising RetryableStatus or ConnectionFailed; any
    other exception passes through at once. Giving up raises RegistryError naming what was tried.
    """

    def __init__(
        self,
        policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        seed: int | None = 0,
    ) -> None:
        self.policy = policy or RetryPolicy()
        self.sleep = sleep
        # Seeded so that a test sees the same delays each run; spread is what matters, not secrecy.
        self.rng = random.Random(seed)
        self.retries = 0

    def run(self, operation: Callable[[], T], describe: str) -> T:
        """`describe` is e.g. `registry 127.0.0.1:5000: GET /v2/x/manifests/latest`."""
        attempts = self.policy.max_attempts
        for attempt in range(attempts):
            try:
                return operation()
            except RetryableStatus as exc:
                reason, retry_after = f"HTTP {exc.status}", exc.retry_after
            except ConnectionFailed as exc:
                reason, retry_after = f"connection failed ({exc})", None
            if attempt + 1 == attempts:
                raise RegistryError(f"{describe}: {reason} (gave up after {attempts} attempts)")
            self.retries += 1
            self.sleep(self.policy.delay(attempt, self.rng, retry_after))
        raise AssertionError("unreachable")


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Retry-After is either delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())


def is_loopback(registry: str) -> bool:
    """True for `localhost`, 127.0.0.0/8 and ::1, with or without a port."""
    host = urlsplit(f"//{registry}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def registry_url(registry: str, insecure: frozenset[str] | set[str] = frozenset()) -> str:
    """`http://host` only for loopback or registries the user marked insecure; else `https://`."""
    scheme = "http" if is_loopback(registry) or registry in insecure else "https"
    return f"{scheme}://{registry}"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc.rpartition("@")[2]
