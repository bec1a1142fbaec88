"""RemoteOptions: where the remote cache and executor are and how to reach them, as the command
line gave them.

Light on imports: a build request holds one, and making a request must not load gRPC.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyimg.errors import UsageError

__all__ = ["RemoteOptions", "endpoint", "parse_header"]

SCHEMES = ("grpc://", "grpcs://")


@dataclass(frozen=True)
class RemoteOptions:
    """`cache`: grpc://HOST:PORT or grpcs://HOST:PORT. `headers` go with every call (an auth
    token: never logged, never written to a record). `ca_file`: the CA bundle that grpcs://
    trusts (the system's when None). `upload`: whether results that ran locally are uploaded
    (False: a read-only cache). `timeout`: seconds one call may take before the cache counts
    as down for the rest of the build. `executor`: the --remote-executor endpoint, where
    sandboxed commands run (the cache is the same endpoint unless --remote-cache names
    another); `local_fallback`: run an action locally when the executor keeps failing;
    `retry_backoff`: seconds before the first retry of a failed remote execution call (each
    further retry waits twice as long)."""

    cache: str
    instance_name: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    ca_file: str | None = None
    upload: bool = True
    timeout: float = 60.0
    executor: str | None = None
    local_fallback: bool = False
    retry_backoff: float = 0.5

    def __post_init__(self) -> None:
        for flag, url in (("--remote-cache", self.cache), ("--remote-executor", self.executor)):
            if url is not None and (not url.startswith(SCHEMES) or not url.split("://", 1)[1]):
                raise UsageError(f"{flag} {url!r}: expected grpc://HOST:PORT or "
                                 "grpcs://HOST:PORT")
        if self.ca_file is not None and not self.cache.startswith("grpcs://"):
            raise UsageError("--remote-ca-file needs a grpcs:// remote")
        if self.timeout <= 0:
            raise UsageError(f"--remote-timeout must be positive, got {self.timeout}")
        if self.retry_backoff < 0:
            raise UsageError(f"--remote-retry-backoff must not be negative, got "
                             f"{self.retry_backoff}")

    @property
    def target(self) -> str:
        """HOST:PORT of the cache."""
        return endpoint(self.cache)


def endpoint(url: str) -> str:
    """HOST:PORT of a grpc:// or grpcs:// URL."""
    return url.split("://", 1)[1].rstrip("/")


def parse_header(text: str) -> tuple[str, str]:
    """`--remote-header NAME=VALUE` -> (lower-case name, value): gRPC metadata keys are."""
    name, sep, value = text.partition("=")
    name = name.strip().lower()
    if not sep or not name:
        raise UsageError(
            "--remote-header expects NAME=VALUE (the value is not shown: it may be a token)")
    return name, value
