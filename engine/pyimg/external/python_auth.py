"""Credentials for Python package indexes, found as pip finds them: in the index URL, in
~/.netrc (or $NETRC), then from the `keyring` command-line program (pip's
`--keyring-provider subprocess`); held in memory for one command, never written or shown."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import urllib.parse
from collections.abc import Callable, Mapping

__all__ = ["IndexAuth", "without_userinfo"]

# (argv, env) -> the program's stdout, or None when it failed: the seam tests never need.
RunKeyring = Callable[[list[str], Mapping[str, str]], str | None]
_KEYRING_TIMEOUT_S = 60


def without_userinfo(url: str) -> str:
    """`url` with any `user:password@` removed: what may be recorded, logged or shown."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _userinfo(url: str) -> tuple[str | None, str | None]:
    parts = urllib.parse.urlsplit(url)
    user = urllib.parse.unquote(parts.username) if parts.username else None
    password = urllib.parse.unquote(parts.password) if parts.password is not None else None
    return user, password


def _run_keyring(argv: list[str], env: Mapping[str, str]) -> str | None:
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, env=dict(env),
                              timeout=_KEYRING_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.decode("utf-8", "replace")


class IndexAuth:
    """The credentials of the declared indexes, looked up once per host on first use. A URL on
    an index's host (its pages and the files they link) gets that index's credentials, in pip's
    order: a password in the index URL; the netrc entry of the host; `keyring get INDEX_URL
    USER`, then `keyring get HOST USER`, where USER is the user name in the index URL (pip's
    subprocess provider needs it there too)."""

    def __init__(self, index_urls: tuple[str, ...] | list[str],
                 env: Mapping[str, str] | None = None,
                 run_keyring: RunKeyring = _run_keyring) -> None:
        self._indexes = list(index_urls)
        self._env = dict(os.environ if env is None else env)
        self._run_keyring = run_keyring
        self._found: dict[str, tuple[str, str] | None] = {}

    def _index_of(self, url: str) -> str | None:
        """The first declared index on the host of `url`."""
        netloc = urllib.parse.urlsplit(without_userinfo(url)).netloc
        for index in self._indexes:
            if urllib.parse.urlsplit(without_userinfo(index)).netloc == netloc:
                return index
        return None

    def credentials(self, url: str) -> tuple[str, str] | None:
        """(user, password) to send with `url`, or None."""
        user, password = _userinfo(url)
        if user is not None and password is not None:
            return user, password
        index = self._index_of(url)
        if index is None:
            return self._netrc(url)
        if index not in self._found:
            self._found[index] = self._lookup(index)
        return self._found[index]

    def _lookup(self, index: str) -> tuple[str, str] | None:
        user, password = _userinfo(index)
        if user is not None and password is not None:
            return user, password
        found = self._netrc(index)
        if found is not None or user is None:
            return found
        program = shutil.which("keyring", path=self._env.get("PATH"))
        if program is None:
            return None
        env = {**self._env, "PYTHONIOENCODING": "utf-8"}
        bare = without_userinfo(index)
        for service in (bare, urllib.parse.urlsplit(bare).netloc):
            out = self._run_keyring([program, "get", service, user], env)
            secret = out.rstrip("\r\n") if out is not None else ""
            if secret:
                return user, secret
        return None

    @staticmethod
    def _netrc(url: str) -> tuple[str, str] | None:
        from requests.utils import get_netrc_auth

        auth = get_netrc_auth(without_userinfo(url))  # ~/.netrc or $NETRC, as pip reads it
        return (auth[0], auth[1]) if auth else None

    def headers(self, url: str) -> dict[str, str]:
        """The Authorization header for `url`, if it has credentials."""
        found = self.credentials(url)
        if found is None:
            return {}
        token = base64.b64encode(f"{found[0]}:{found[1]}".encode()).decode("ascii")
        return {"Authorization": f"Basic {token}"}
