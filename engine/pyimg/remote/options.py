"""RemoteOptions: where the remote cache is and how to reach it, as the command line gave it.

Light on imports: a build request holds one, and making a request must not load gRPC.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyimg.errors import UsageError

__all__ = ["RemoteOptions", "parse_header"]

SCHEMES = ("grpc://", "grpcs://")


@dataclass(frozen=True)
class RemoteOptions:
    """`cache`: grpc://HOST:PORT or grpcs://HOST:PORT. `headers` go with every call (an auth
    token: never logged, never written to a record). `ca_file`: the CA bundle that grpcs://
    trusts (the system's when None). `upload`: whether results that ran locally are uploaded
    (False: a read-only cache). `timeout`: seconds one call may take before the cache counts
    as down for the rest of the build."""

    cache: str
    instance_name: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    ca_file: str | None = None
    upload: bool = True
    timeout: float = 60.0

    def __post_init__(self) -> None:
        if not self.cache.startswith(SCHEMES) or not self.cache.split("://", 1)[1]:
            raise UsageError(f"--remote-cache {self.cache!r}: expected grpc://HOST:PORT or "
                             "grpcs://HOST:PORT")
        if self.ca_file is not None and not self.cache.startswith("grpcs://"):
            raise UsageError("--remote-ca-file needs a grpcs:// --remote-cache")
        if self.timeout <= 0:
            raise UsageError(f"--remote-timeout must be positive, got {self.timeout}")

    @property
    def target(self) -> str:
        """HOST:PORT."""
        return self.cache.split("://", 1)[1].rstrip("/")

    @property
    def tls(self) -> bool:
        return self.cache.startswith("grpcs://")


def parse_header(text: str) -> tuple[str, str]:
    """`--remote-header NAME=VALUE` -> (lower-case name, value): gRPC metadata keys are."""
    name, sep, value = text.partition("=")
    name = name.strip().lower()
    if not sep or not name:
        raise UsageError("--remote-header expects NAME=VALUE (the value is not shown: it may be a token)")
    return name, value
