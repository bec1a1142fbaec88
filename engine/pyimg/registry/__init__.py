"""The distribution-spec client: references, auth, transport, pull and push with retries."""

from .auth import Authenticator, Challenge, Credentials, CredentialStore, parse_challenges
from .client import (
    FetchedManifest,
    Platform,
    PullResult,
    PushCounters,
    RegistryClient,
    pull_to_layout,
    push_layout,
)
from .reference import Reference, parse_reference
from .transport import RequestsTransport, RetryPolicy, Transport

__all__ = [
    "Authenticator",
    "Challenge",
    "CredentialStore",
    "Credentials",
    "FetchedManifest",
    "Platform",
    "PullResult",
    "PushCounters",
    "Reference",
    "RegistryClient",
    "RequestsTransport",
    "RetryPolicy",
    "Transport",
    "parse_challenges",
    "parse_reference",
    "pull_to_layout",
    "push_layout",
]
