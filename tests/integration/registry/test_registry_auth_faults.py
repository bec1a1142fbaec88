"""Basic auth (config file, credential helper) and fault injection through a loopback proxy."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from pyimg.core.digest import Digest
from pyimg.errors import IntegrityError, RegistryError
from pyimg.registry.auth import CredentialStore
from pyimg.registry.client import RegistryClient
from pyimg.registry.reference import parse_reference
from pyimg.registry.transport import RetryPolicy
from regtestlib import FaultProxy, blob_files, make_image

pytestmark = pytest.mark.slow


def test_basic_auth_from_config_file(basic_registry, tmp_path: Path) -> None:
    src = tmp_path / "src"
    desc = make_image(src)
    host = basic_registry.host
    anon = RegistryClient()  # DOCKER_CONFIG points at nothing (conftest)
    with pytest.raises(RegistryError, match="HTTP 401"):
        anon.push_layout(src, f"{host}/private:v1")

    config = tmp_path / "config.json"
    auth = base64.b64encode(b"alice:wonderland").decode()
    config.write_text(json.dumps({"auths": {f"http://{host}": {"auth": auth}}}))
    client = RegistryClient(credentials=CredentialStore(config))
    assert str(client.push_layout(src, f"{host}/private:v1")) == desc["digest"]
    pulled = client.pull_to_layout(f"{host}/private:v1", tmp_path / "pulled")
    assert pulled.manifest.digest == Digest.parse(desc["digest"])
    assert blob_files(tmp_path / "pulled") == blob_files(src)

    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"auths": {host: {"username": "alice", "password": "nope"}}}))
    with pytest.raises(RegistryError) as info:
        RegistryClient(credentials=CredentialStore(wrong)).get_manifest(
            parse_reference(f"{host}/private:v1")
        )
    assert "HTTP 401" in str(info.value) and "nope" not in str(info.value)


def test_basic_auth_from_credential_helper(basic_registry, tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-test"
    helper.write_text(
        "#!/bin/sh\nread server\n"
        f'[ "$server" = "{basic_registry.host}" ] || {{ echo "credentials not found"; exit 1; }}\n'
        'echo \'{"Username":"alice","Secret":"wonderland"}\'\n'
    )
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"credHelpers": {basic_registry.host: "test"}}))
    env = {"PATH": f"{bindir}:/usr/bin:/bin"}
    client = RegistryClient(credentials=CredentialStore(config, env=env))
    src = tmp_path / "src"
    desc = make_image(src, layers=[{"helper": b"h"}])
    assert str(client.push_layout(src, f"{basic_registry.host}/helper:v1")) == desc["digest"]


# -- fault injection --------------------------------------------------------------------------


@pytest.fixture
def proxy(registry):
    p = FaultProxy(registry.host)
    yield p
    p.close()


@pytest.fixture
def pushed(registry, tmp_path: Path):
    """An image pushed straight to the registry; returns (repo path on proxy, layer digest)."""
    src = tmp_path / "src"
    desc = make_image(src, tag="v1", layers=[{"big.bin": bytes(range(256)) * 4000}])
    RegistryClient().push_layout(src, f"{registry.host}/faulty:v1")
    manifest = json.loads((src / "blobs" / "sha256" / desc["digest"][7:]).read_bytes())
    return src, manifest["layers"][0]


def _client(sleeps: list[float]) -> RegistryClient:
    return RegistryClient(
        sleep=sleeps.append, retry_policy=RetryPolicy(max_attempts=4, base_delay=0.01)
    )


def test_status_faults_retried(proxy, pushed, tmp_path: Path) -> None:
    src, _ = pushed
    proxy.faults = [("GET", "/manifests/", "500"), ("GET", "/manifests/", "429")]
    sleeps: list[float] = []
    result = _client(sleeps).pull_to_layout(f"{proxy.host}/faulty:v1", tmp_path / "out")
    assert proxy.injected and not proxy.faults
    assert sleeps[1] == 1.0  # Retry-After honoured
    assert blob_files(tmp_path / "out") == blob_files(src)
    assert result.fetched_blobs == 3


def test_dropped_blob_connection_retried(proxy, pushed, tmp_path: Path) -> None:
    src, layer = pushed
    proxy.faults = [("GET", layer["digest"], "drop")]
    sleeps: list[float] = []
    client = _client(sleeps)
    client.pull_to_layout(f"{proxy.host}/faulty:v1", tmp_path / "out")
    assert proxy.injected == [f"drop GET /v2/faulty/blobs/{layer['digest']}"]
    assert client.retries == 1
    assert blob_files(tmp_path / "out") == blob_files(src)


@pytest.mark.parametrize("fault", ["truncate", "corrupt"])
def test_bad_blob_bytes_refused(proxy, pushed, tmp_path: Path, fault: str) -> None:
    _, layer = pushed
    proxy.faults = [("GET", layer["digest"], fault)]
    with pytest.raises(IntegrityError) as info:
        _client([]).pull_to_layout(f"{proxy.host}/faulty:v1", tmp_path / "out")
    assert layer["digest"] in str(info.value)
    blobs = tmp_path / "out" / "blobs" / "sha256"
    assert layer["digest"][7:] not in {p.name for p in blobs.iterdir()}
    assert not [p for p in blobs.iterdir() if p.name.startswith(".")]  # no temp files left


def test_upload_faults_retried(proxy, tmp_path: Path) -> None:
    src = tmp_path / "src"
    desc = make_image(src, layers=[{"up": b"upload me" * 1000}])
    proxy.faults = [
        ("POST", "/blobs/uploads/", "503"),
        ("PUT", "/blobs/uploads/", "500"),
        ("PUT", "/manifests/", "429"),
    ]
    sleeps: list[float] = []
    client = _client(sleeps)
    assert str(client.push_layout(src, f"{proxy.host}/upfaults:v1")) == desc["digest"]
    assert not proxy.faults and client.retries == 3
    assert client.counters.uploaded == 2


def test_give_up_names_registry_method_path_status(proxy, pushed) -> None:
    proxy.faults = [("GET", "/manifests/v1", "503")] * 4
    with pytest.raises(RegistryError) as info:
        _client([]).get_manifest(parse_reference(f"{proxy.host}/faulty:v1"))
    assert str(info.value) == (
        f"registry {proxy.host}: GET /v2/faulty/manifests/v1: HTTP 503 (gave up after 4 attempts)"
    )
