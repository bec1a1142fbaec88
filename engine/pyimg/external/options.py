"""How a command reaches external inputs: registry credentials, plain-http hosts, offline mode.

Light on purpose: the command line builds these options before anything is fetched or loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyimg.registry.client import RegistryClient

__all__ = ["RegistryOptions"]


@dataclass(frozen=True)
class RegistryOptions:
    """A docker config file for credentials (None: ~/.docker/config.json), the hosts allowed over
    plain http, and `offline`: external inputs come only from the repository cache."""

    config: str | None = None
    insecure: tuple[str, ...] = ()
    offline: bool = False

    def client(self) -> RegistryClient:
        from pyimg.registry.auth import CredentialStore
        from pyimg.registry.client import RegistryClient

        return RegistryClient(credentials=CredentialStore(self.config), insecure=self.insecure)
