"""Talking to registries: one transport, credentials and token cache; requests with auth and retries.

Every verb (pull.py, push.py, mount.py) sends through a `Connection`: it answers one 401 with
credentials or a token (auth.py), retries what the retry policy says (transport.py), and turns an
unexpected status into a RegistryError that names the registry, the method and the path, with
the registry's own error codes. Registries speak the OCI distribution spec
(https://github.com/opencontainers/distribution-spec/blob/main/spec.md); docs/architecture.md
says where the client sits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TypeVar
from urllib.parse import urljoin, urlsplit

from pyimg.core import json_input
from pyimg.errors import RegistryError

from .auth import Authenticator, CredentialStore
from .reference import Reference
from .transport import (
    RETRYABLE_STATUSES,
    Body,
    Request,
    RequestsTransport,
    Response,
    Retrier,
    RetryableStatus,
    RetryPolicy,
    Transport,
    parse_retry_after,
    registry_url,
)

__all__ = ["Connection"]

T = TypeVar("T")


class Connection:
    """Requests to one or more registries, sharing a transport, credentials and token cache.

    `sleep`, `seed` and `clock` are the seams that make retries and token expiry testable.
    """

    def __init__(
        self,
        transport: Transport | None = None,
        credentials: CredentialStore | None = None,
        *,
        insecure: Iterable[str] = (),
        retry_policy: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        seed: int | None = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transport = transport or RequestsTransport()
        self._retrier = Retrier(retry_policy, sleep=sleep, seed=seed)
        self._auth = Authenticator(
            self._transport, credentials or CredentialStore(), self._retrier, clock
        )
        self._insecure = frozenset(insecure)

    @property
    def retries(self) -> int:
        """How many times a request was retried so far (for tests and progress)."""
        return self._retrier.retries

    @property
    def token_fetches(self) -> int:
        return self._auth.token_fetches

    def url(self, ref: Reference, path: str) -> str:
        """The URL of `path` (`/v2/...`) on `ref`'s registry: https unless loopback or insecure."""
        return registry_url(ref.endpoint, self._insecure) + path

    @staticmethod
    def describe(ref: Reference, method: str, url: str) -> str:
        # The path without its query: upload URLs carry opaque state that is nobody's business.
        return f"registry {ref.registry}: {method} {urlsplit(url).path}"

    def pause(self, seconds: float) -> None:
        """Wait before asking again (the retries' sleep, which tests replace)."""
        self._retrier.sleep(seconds)

    def retrying(self, operation: Callable[[], T], describe: str) -> T:
        """Run `operation` under the retry policy (it raises RetryableStatus or ConnectionFailed
        to be retried); used for work of several requests that restarts as a whole."""
        return self._retrier.run(operation, describe)

    def send(
        self,
        ref: Reference,
        method: str,
        url: str,
        *,
        push: bool = False,
        extra_scopes: tuple[str, ...] = (),
        headers: tuple[tuple[str, str], ...] = (),
        body: Body = None,
        follow_redirects: bool = True,
        retry: bool = True,
    ) -> Response:
        """Send with auth (answering one 401) and, when `retry`, the retry policy.

        With `retry=False` a retryable status raises RetryableStatus for the caller's own loop
        (an upload session restarts as a whole rather than replaying one request of it).
        """
        scopes = (f"repository:{ref.repository}:{'pull,push' if push else 'pull'}", *extra_scopes)

        def attempt() -> Response:
            auth = self._auth.header(ref.registry, scopes)
            sent = headers + ((("Authorization", auth),) if auth else ())
            resp = self._transport.send(Request(method, url, sent, body, follow_redirects))
            if resp.status == 401:
                challenge = resp.headers.get("WWW-Authenticate")
                resp.close()
                new = self._auth.on_unauthorized(ref.registry, scopes, challenge)
                if new is not None and new != auth:
                    sent = headers + (("Authorization", new),)
                    resp = self._transport.send(Request(method, url, sent, body, follow_redirects))
            if resp.status in RETRYABLE_STATUSES:
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                resp.close()
                raise RetryableStatus(resp.status, retry_after)
            return resp

        if retry:
            return self._retrier.run(attempt, self.describe(ref, method, url))
        return attempt()

    def fail(self, ref: Reference, method: str, url: str, resp: Response) -> RegistryError:
        """A RegistryError for an unexpected status, with the registry's error codes if any."""
        detail = ""
        codes: tuple[str, ...] = ()
        try:
            body = resp.read(64 << 10) if method != "HEAD" else b""
            errors = [e for e in json_input.loads(body).get("errors") or [] if isinstance(e, dict)]
            codes = tuple(str(e.get("code")) for e in errors)
            described = [f"{e.get('code')}: {e.get('message')}" for e in errors]
            detail = f" ({'; '.join(described)})" if described else ""
        except Exception:  # noqa: BLE001 - the status alone is still a good message
            pass
        finally:
            resp.close()
        hint = {401: " unauthorized: check credentials", 403: " denied", 404: " not found"}
        error = RegistryError(
            f"{self.describe(ref, method, url)}: HTTP {resp.status}{hint.get(resp.status, '')}{detail}"
        )
        error.codes = codes
        return error

    def location(self, ref: Reference, url: str, resp: Response) -> str:
        """The absolute Location an answer to `url` points at (an upload session's next URL)."""
        location = resp.headers.get("Location")
        resp.close()
        if not location:
            raise RegistryError(f"{self.describe(ref, 'POST', url)}: no Location in the answer")
        return urljoin(url, location)

    def close(self) -> None:
        close = getattr(self._transport, "close", None)
        if close is not None:
            close()
