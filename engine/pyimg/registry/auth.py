"""Registry auth: WWW-Authenticate challenges, docker config credentials, bearer tokens (cached).

No function here logs a credential or puts one in an exception message; `Credentials.__repr__`
hides the secret so that a stray `repr()` in a traceback does not leak it either.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from pyimg.core import json_input
from pyimg.core.errors import RegistryError, UsageError

from .transport import (
    RETRYABLE_STATUSES,
    Request,
    Retrier,
    RetryableStatus,
    Transport,
    parse_retry_after,
)

__all__ = [
    "Authenticator",
    "Challenge",
    "CredentialStore",
    "Credentials",
    "default_config_path",
    "parse_challenges",
]

# The key Docker uses for the Hub in config.json and with credential helpers.
_HUB_KEY = "https://index.docker.io/v1/"
_HUB_NAMES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
# Tokens without expires_in are valid for 60 s (distribution token spec); renew a bit early.
_DEFAULT_TOKEN_LIFETIME = 60.0
_EXPIRY_MARGIN = 10.0


@dataclass(frozen=True, slots=True)
class Challenge:
    """One challenge of a WWW-Authenticate header; scheme lowercased, param names lowercased."""

    scheme: str
    params: tuple[tuple[str, str], ...] = ()

    def get(self, name: str, default: str | None = None) -> str | None:
        for key, value in self.params:
            if key == name:
                return value
        return default


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    # An OAuth2 refresh token (docker config `identitytoken`, or a helper's `<token>` user).
    identity_token: str | None = field(default=None, repr=False)


# auth-param = token BWS "=" BWS ( token / quoted-string )  (RFC 9110 §11.2)
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_PARAM = re.compile(rf'\s*({_TOKEN})\s*=\s*("(?:[^"\\]|\\.)*"|{_TOKEN}=*)\s*(?:,|$)')
_SCHEME = re.compile(rf"\s*,?\s*({_TOKEN})(?:\s+|$)")


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a WWW-Authenticate value, which may hold several comma-separated challenges.

    `Bearer realm="https://auth/token",service="reg",scope="repository:a:pull,push"` ->
    [Challenge("bearer", (("realm", ...), ("service", ...), ("scope", ...)))].
    Unparseable text ends the parse (what came before is kept); no exception.
    """
    challenges: list[Challenge] = []
    pos = 0
    while pos < len(header):
        m = _SCHEME.match(header, pos)
        if not m:
            break
        scheme = m.group(1).lower()
        pos = m.end()
        params: list[tuple[str, str]] = []
        while pos < len(header):
            p = _PARAM.match(header, pos)
            if not p:
                break
            value = p.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            params.append((p.group(1).lower(), value))
            pos = p.end()
        challenges.append(Challenge(scheme, tuple(params)))
        if pos < len(header) and not _SCHEME.match(header, pos):
            break
    return challenges


def default_config_path(env: Mapping[str, str] | None = None) -> Path:
    """`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json` (what the docker CLI reads)."""
    env = os.environ if env is None else env
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"]) / "config.json"
    return Path(env.get("HOME") or Path.home()) / ".docker" / "config.json"


def _config_keys(registry: str) -> list[str]:
    """Keys under which config.json may hold a registry, most specific first."""
    if registry in _HUB_NAMES:
        return [_HUB_KEY, "docker.io", "index.docker.io", "registry-1.docker.io"]
    return [registry]


def _normalize_key(key: str) -> str:
    # Keys may be written as URLs (`https://host:5000/v2/`); compare on the host[:port].
    if "://" in key:
        return urlsplit(key).netloc
    return key.split("/", 1)[0]


class CredentialStore:
    """Credentials from a docker config file: `credHelpers`, then `auths`, then `credsStore`.

    `run` is the seam for the helper subprocess (tests pass a fake or put a script on PATH).
    The file is read lazily, once; a missing file means no credentials.
    """

    def __init__(
        self,
        config_path: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        run: Callable[..., subprocess.CompletedProcess[bytes]] = subprocess.run,
    ) -> None:
        self._explicit = config_path is not None
        self._path = Path(config_path) if config_path is not None else default_config_path(env)
        self._env = dict(os.environ if env is None else env)
        self._run = run
        self._config: dict[str, Any] | None = None
        self._cache: dict[str, Credentials | None] = {}

    def _load(self) -> dict[str, Any]:
        if self._config is None:
            try:
                text = self._path.read_text()
            except FileNotFoundError:
                if self._explicit:
                    raise UsageError(f"registry config {self._path} does not exist") from None
                text = "{}"
            try:
                config = json_input.loads(text) if text.strip() else {}
            except json.JSONDecodeError as exc:
                # The position, not the text: the file holds secrets.
                raise UsageError(
                    f"registry config {self._path} is not valid JSON (line {exc.lineno})"
                ) from None
            if not isinstance(config, dict):
                raise UsageError(f"registry config {self._path}: top level is not an object")
            self._config = config
        return self._config

    def get(self, registry: str) -> Credentials | None:
        """Credentials for `registry` (host[:port] as in the reference), or None for anonymous."""
        if registry not in self._cache:
            self._cache[registry] = self._resolve(registry)
        return self._cache[registry]

    def _resolve(self, registry: str) -> Credentials | None:
        config = self._load()
        keys = _config_keys(registry)
        helpers = config.get("credHelpers") or {}
        for key in keys:
            helper = helpers.get(key) or helpers.get(_normalize_key(key))
            if helper:
                return self._from_helper(helper, keys[0])
        auths = config.get("auths") or {}
        wanted = {_normalize_key(k) for k in keys}
        for key, entry in auths.items():
            if _normalize_key(key) in wanted and isinstance(entry, dict):
                creds = _from_auth_entry(entry, registry, self._path)
                if creds is not None:
                    return creds
        store = config.get("credsStore")
        if store:
            return self._from_helper(store, keys[0])
        return None

    def _from_helper(self, name: str, server: str) -> Credentials | None:
        program = f"docker-credential-{name}"
        try:
            proc = self._run(
                [program, "get"],
                input=server.encode(),
                capture_output=True,
                env=self._env,
                timeout=60,
            )
        except FileNotFoundError:
            raise RegistryError(
                f"credential helper {program} (for {server}) is not on PATH"
            ) from None
        except subprocess.TimeoutExpired:
            raise RegistryError(f"credential helper {program} (for {server}) timed out") from None
        if proc.returncode != 0:
            # The helper protocol says "credentials not found" on stdout for an unknown server:
            # that is anonymous access, not an error. Other output is not echoed (may hold secrets).
            if b"credentials not found" in (proc.stdout or b"").lower():
                return None
            raise RegistryError(
                f"credential helper {program} failed for {server} (exit {proc.returncode})"
            )
        try:
            data = json_input.loads(proc.stdout)
            username, secret = data["Username"], data["Secret"]
        except (ValueError, KeyError, TypeError):
            raise RegistryError(
                f"credential helper {program} returned malformed output for {server}"
            ) from None
        if username == "<token>":
            return Credentials("", "", identity_token=secret)
        return Credentials(username, secret)


def _from_auth_entry(entry: Mapping[str, Any], registry: str, path: Path) -> Credentials | None:
    token = entry.get("identitytoken") or None
    if entry.get("auth"):
        try:
            decoded = base64.b64decode(entry["auth"], validate=False).decode()
            username, sep, password = decoded.partition(":")
        except (ValueError, UnicodeDecodeError):
            sep = ""
        if not sep:
            raise UsageError(
                f"registry config {path}: `auth` for {registry} is not base64 user:pass"
            )
        return Credentials(username, password, token)
    if entry.get("username"):
        return Credentials(entry["username"], entry.get("password", ""), token)
    if token:
        return Credentials("", "", token)
    return None


def _covered(scope: str, scopes: tuple[str, ...]) -> bool:
    """Whether `repository:x:pull` is already implied by one of ours (`repository:x:pull,push`)."""
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    for ours in scopes:
        o_kind, _, o_rest = ours.partition(":")
        o_name, _, o_actions = o_rest.rpartition(":")
        if (o_kind, o_name) == (kind, name) and set(actions.split(",")) <= set(
            o_actions.split(",")
        ):
            return True
    return False


def basic_header(creds: Credentials) -> str:
    raw = f"{creds.username}:{creds.password}".encode()
    return "Basic " + base64.b64encode(raw).decode()


@dataclass(slots=True)
class _Token:
    value: str
    expires_at: float


class Authenticator:
    """Turns 401 challenges into Authorization headers, caching bearer tokens per scope.

    Cache key: (registry, sorted scopes). A token is reused until `expires_in` (default 60 s)
    minus a margin. The last challenge per registry is remembered so a request for a new scope
    fetches its token up front instead of taking another 401.
    """

    def __init__(
        self,
        transport: Transport,
        credentials: CredentialStore | None = None,
        retrier: Retrier | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transport = transport
        self._credentials = credentials or CredentialStore()
        self._retrier = retrier or Retrier()
        self._clock = clock
        self._tokens: dict[tuple[str, tuple[str, ...]], _Token] = {}
        self._challenges: dict[str, Challenge] = {}
        self.token_fetches = 0

    def header(self, registry: str, scopes: tuple[str, ...]) -> str | None:
        """The Authorization header to send before any challenge, if one is known."""
        challenge = self._challenges.get(registry)
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            creds = self._credentials.get(registry)
            return basic_header(creds) if creds and not creds.identity_token else None
        key = (registry, tuple(sorted(scopes)))
        token = self._tokens.get(key)
        if token is not None and token.expires_at > self._clock():
            return f"Bearer {token.value}"
        return self._fetch_token(registry, challenge, scopes)

    def on_unauthorized(
        self, registry: str, scopes: tuple[str, ...], www_authenticate: str | None
    ) -> str | None:
        """Answer a 401: the header to retry with, or None when there is nothing to try."""
        challenges = parse_challenges(www_authenticate or "")
        chosen = next((c for c in challenges if c.scheme == "bearer"), None) or next(
            (c for c in challenges if c.scheme == "basic"), None
        )
        if chosen is None:
            return None
        self._challenges[registry] = chosen
        if chosen.scheme == "basic":
            creds = self._credentials.get(registry)
            if creds is None or creds.identity_token:
                return None
            return basic_header(creds)
        # A challenge may name a scope beyond ours (e.g. the mount source); ask for both.
        extra = chosen.get("scope")
        wanted = set(scopes)
        if extra and not _covered(extra, scopes):
            wanted.add(extra)
        all_scopes = tuple(sorted(wanted))
        self._tokens.pop((registry, tuple(sorted(scopes))), None)
        return self._fetch_token(registry, chosen, all_scopes, cache_as=scopes)

    def _fetch_token(
        self,
        registry: str,
        challenge: Challenge,
        scopes: tuple[str, ...],
        cache_as: tuple[str, ...] | None = None,
    ) -> str:
        realm = challenge.get("realm")
        if not realm:
            raise RegistryError(f"registry {registry}: bearer challenge without a realm")
        realm_parts = urlsplit(realm)
        if realm_parts.scheme not in ("https", "http"):
            raise RegistryError(f"registry {registry}: token realm is not an http(s) URL")
        service = challenge.get("service")
        creds = self._credentials.get(registry)
        query: list[tuple[str, str]] = []
        if service:
            query.append(("service", service))
        for scope in sorted(scopes):
            query.append(("scope", scope))
        headers: list[tuple[str, str]] = []
        body: bytes | None = None
        if creds is not None and creds.identity_token:
            # OAuth2 refresh-token grant (distribution docs: token auth, oauth.md).
            method, url = "POST", realm
            form = [("grant_type", "refresh_token"), ("refresh_token", creds.identity_token)]
            form += [("client_id", "pyimg"), *query]
            body = urlencode(form).encode()
            headers.append(("Content-Type", "application/x-www-form-urlencoded"))
        else:
            method = "GET"
            url = realm + ("&" if realm_parts.query else "?") + urlencode(query)
            if creds is not None:
                headers.append(("Authorization", basic_header(creds)))
        where = f"registry {registry}: token request to {realm_parts.netloc}{realm_parts.path}"

        def attempt() -> dict[str, Any]:
            resp = self._transport.send(Request(method, url, tuple(headers), body))
            if resp.status in RETRYABLE_STATUSES:
                resp.close()
                raise RetryableStatus(
                    resp.status, parse_retry_after(resp.headers.get("Retry-After"))
                )
            data = resp.read(1 << 20)
            if resp.status in (401, 403):
                who = "anonymous access" if creds is None else "the configured credentials"
                raise RegistryError(f"{where}: HTTP {resp.status}: {who} were refused")
            if resp.status != 200:
                raise RegistryError(f"{where}: HTTP {resp.status}")
            try:
                parsed = json_input.loads(data)
            except ValueError:
                raise RegistryError(f"{where}: response is not JSON") from None
            if not isinstance(parsed, dict):
                raise RegistryError(f"{where}: response is not a JSON object")
            return parsed

        start = self._clock()
        payload = self._retrier.run(attempt, where)
        self.token_fetches += 1
        value = payload.get("token") or payload.get("access_token")
        if not isinstance(value, str) or not value:
            raise RegistryError(f"{where}: response has no token")
        try:
            lifetime = float(payload.get("expires_in") or _DEFAULT_TOKEN_LIFETIME)
        except (TypeError, ValueError):
            lifetime = _DEFAULT_TOKEN_LIFETIME
        expires = start + max(0.0, lifetime - _EXPIRY_MARGIN)
        key = (registry, tuple(sorted(cache_as if cache_as is not None else scopes)))
        self._tokens[key] = _Token(value, expires)
        return f"Bearer {value}"
