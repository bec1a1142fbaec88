"""Challenges, docker config credentials (auths, credHelpers, credsStore), bearer token cache."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from pyimg.errors import RegistryError, UsageError
from pyimg.registry.auth import (
    Authenticator,
    Challenge,
    Credentials,
    CredentialStore,
    default_config_path,
    parse_challenges,
)
from pyimg.registry.transport import Retrier, RetryPolicy
from regfakes import FakeTransport, resp


def test_parse_bearer_challenge() -> None:
    [c] = parse_challenges(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/alpine:pull,push"'
    )
    assert c.scheme == "bearer"
    assert c.get("realm") == "https://auth.docker.io/token"
    assert c.get("service") == "registry.docker.io"
    assert c.get("scope") == "repository:library/alpine:pull,push"


def test_parse_basic_and_multiple_and_escapes() -> None:
    cs = parse_challenges('Basic realm="Registry Realm", Bearer realm="https://a/t",error="x\\"y"')
    assert [c.scheme for c in cs] == ["basic", "bearer"]
    assert cs[0].get("realm") == "Registry Realm"
    assert cs[1].get("error") == 'x"y'
    assert parse_challenges("Basic") == [Challenge("basic")]
    assert parse_challenges("BASIC realm=plain") == [Challenge("basic", (("realm", "plain"),))]
    assert parse_challenges("") == []


def test_credentials_repr_hides_secret() -> None:
    assert "hunter2" not in repr(Credentials("u", "hunter2", "tok"))


def _config(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return path


def test_auths_base64_and_username_password(tmp_path: Path) -> None:
    auth = base64.b64encode(b"alice:s3cr:et").decode()
    path = _config(
        tmp_path,
        {
            "auths": {
                "https://r.example.com/v2/": {"auth": auth},
                "127.0.0.1:5000": {"username": "bob", "password": "pw"},
                "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:hpw").decode()},
            }
        },
    )
    store = CredentialStore(path)
    assert store.get("r.example.com") == Credentials("alice", "s3cr:et")
    assert store.get("127.0.0.1:5000") == Credentials("bob", "pw")
    assert store.get("docker.io") == Credentials("hub", "hpw")
    assert store.get("other.io") is None


def test_default_config_path(tmp_path: Path) -> None:
    assert default_config_path({"DOCKER_CONFIG": "/x"}) == Path("/x/config.json")
    assert default_config_path({"HOME": "/h"}) == Path("/h/.docker/config.json")


def test_missing_explicit_config_is_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        CredentialStore(tmp_path / "nope.json").get("r.io")
    # the default path missing just means anonymous
    assert CredentialStore(env={"HOME": str(tmp_path)}).get("r.io") is None


def test_bad_json_does_not_echo_content(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"auths": {"r.io": {"auth": "c2VjcmV0OnB3"}')
    with pytest.raises(UsageError) as info:
        CredentialStore(path).get("r.io")
    assert "c2VjcmV0" not in str(info.value)


HELPER = """#!/bin/sh
read server
echo "$server" >> "{log}"
case "$server" in
  r.example.com) echo '{{"ServerURL":"r.example.com","Username":"helperuser","Secret":"helpersecret"}}' ;;
  https://index.docker.io/v1/) echo '{{"ServerURL":"x","Username":"<token>","Secret":"refresh"}}' ;;
  broken.io) echo "boom secret-in-output" >&2; exit 3 ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
"""


@pytest.fixture
def helper_env(tmp_path: Path) -> dict[str, str]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "helper.log"
    for name in ("fake", "store"):
        script = bindir / f"docker-credential-{name}"
        script.write_text(HELPER.format(log=log))
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}


def test_cred_helper_on_path(tmp_path: Path, helper_env: dict[str, str]) -> None:
    path = _config(tmp_path, {"credHelpers": {"r.example.com": "fake", "broken.io": "fake"}})
    store = CredentialStore(path, env=helper_env)
    assert store.get("r.example.com") == Credentials("helperuser", "helpersecret")
    assert (tmp_path / "helper.log").read_text() == "r.example.com\n"
    store.get("r.example.com")  # cached: the helper runs once
    assert (tmp_path / "helper.log").read_text() == "r.example.com\n"
    with pytest.raises(RegistryError) as info:
        store.get("broken.io")
    assert "docker-credential-fake" in str(info.value) and "exit 3" in str(info.value)
    assert "secret-in-output" not in str(info.value)


def test_creds_store_fallback_and_identity_token(tmp_path: Path, helper_env) -> None:
    path = _config(tmp_path, {"credsStore": "store", "auths": {"x.io": {}}})
    store = CredentialStore(path, env=helper_env)
    hub = store.get("docker.io")
    assert hub is not None and hub.identity_token == "refresh"
    assert store.get("unknown.io") is None  # "credentials not found" -> anonymous
    assert (tmp_path / "helper.log").read_text() == "https://index.docker.io/v1/\nunknown.io\n"


def test_missing_helper_named(tmp_path: Path) -> None:
    path = _config(tmp_path, {"credHelpers": {"r.io": "absent"}})
    with pytest.raises(RegistryError, match="docker-credential-absent .*not on PATH"):
        CredentialStore(path, env={"PATH": str(tmp_path)}).get("r.io")


class _Creds(CredentialStore):
    def __init__(self, creds: Credentials | None) -> None:
        self.creds = creds

    def get(self, registry: str) -> Credentials | None:
        return self.creds


def test_bearer_token_fetch_and_cache() -> None:
    now = [1000.0]
    seen = []

    def handler(req):
        seen.append(req)
        return resp(200, json.dumps({"token": "T1", "expires_in": 300}).encode())

    auth = Authenticator(
        FakeTransport(handler), _Creds(Credentials("u", "p")), Retrier(), clock=lambda: now[0]
    )
    challenge = (
        'Bearer realm="https://auth.io/token?x=1",service="reg",scope="repository:base:pull"'
    )
    header = auth.on_unauthorized("reg.io", ("repository:a:pull,push",), challenge)
    assert header == "Bearer T1"
    url = seen[0].url
    assert url.startswith("https://auth.io/token?x=1&service=reg&scope=")
    # ours, plus the challenge's scope (e.g. a mount source) that ours does not cover
    assert url.endswith("scope=repository%3Aa%3Apull%2Cpush&scope=repository%3Abase%3Apull")
    auth.on_unauthorized("reg.io", ("repository:c:pull,push",), challenge.replace("base", "c"))
    assert seen[-1].url.endswith("&scope=repository%3Ac%3Apull%2Cpush")  # covered: not repeated
    assert dict(seen[0].headers)["Authorization"] == "Basic " + base64.b64encode(b"u:p").decode()
    # cached for the same scope until expiry (minus margin)
    assert auth.header("reg.io", ("repository:a:pull,push",)) == "Bearer T1"
    assert auth.token_fetches == 2
    now[0] += 295
    auth.header("reg.io", ("repository:a:pull,push",))
    assert auth.token_fetches == 3
    # another scope -> another token, fetched up front (the challenge is remembered)
    auth.header("reg.io", ("repository:b:pull",))
    assert auth.token_fetches == 4


def test_token_refused_message_has_no_secret() -> None:
    auth = Authenticator(
        FakeTransport(lambda r: resp(401, b"{}")),
        _Creds(Credentials("u", "topsecret")),
        Retrier(RetryPolicy(max_attempts=1)),
    )
    with pytest.raises(RegistryError) as info:
        auth.on_unauthorized("r.io", ("repository:a:pull",), 'Bearer realm="https://a/t"')
    assert "topsecret" not in str(info.value) and "dTpwb3A" not in str(info.value)
    assert "credentials were refused" in str(info.value)


def test_basic_challenge_uses_credentials() -> None:
    auth = Authenticator(FakeTransport(lambda r: resp(500)), _Creds(Credentials("u", "p")))
    h = auth.on_unauthorized("r.io", ("repository:a:pull",), 'Basic realm="x"')
    assert h == "Basic " + base64.b64encode(b"u:p").decode()
    assert auth.header("r.io", ("repository:other:pull",)) == h
    anon = Authenticator(FakeTransport(lambda r: resp(500)), _Creds(None))
    assert anon.on_unauthorized("r.io", ("s",), 'Basic realm="x"') is None
