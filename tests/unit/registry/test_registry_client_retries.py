"""RegistryClient over a fake transport: retries, give-up messages, digest checks, uploads."""

from __future__ import annotations

import base64
import hashlib
import json
import random
from pathlib import Path

import pytest
from pyimg.core.digest import digest_bytes
from pyimg.errors import IntegrityError, RegistryError
from pyimg.oci.media_types import OCI_INDEX, OCI_MANIFEST
from pyimg.oci.model import Platform
from pyimg.registry.auth import Credentials
from pyimg.registry.client import RegistryClient
from pyimg.registry.reference import parse_reference
from pyimg.registry.transport import (
    ConnectionFailed,
    RetryPolicy,
    is_loopback,
    parse_retry_after,
    registry_url,
)
from regfakes import FakeResponse, FakeTransport, resp, scripted

MANIFEST = json.dumps(
    {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {}, "layers": []}
).encode()
REF = parse_reference("127.0.0.1:5000/app:v1")


class _Creds:
    def __init__(self, creds):
        self.creds = creds

    def get(self, registry):
        return self.creds


def _client(transport, sleeps=None, creds=None, **kw) -> RegistryClient:
    sleeps = [] if sleeps is None else sleeps
    return RegistryClient(
        transport,
        _Creds(creds),
        sleep=sleeps.append,
        retry_policy=kw.pop("retry_policy", RetryPolicy(max_attempts=4, base_delay=1.0)),
        **kw,
    )


def _manifest_ok() -> FakeResponse:
    return resp(200, MANIFEST, Content_Type=OCI_MANIFEST)


def test_500_then_200() -> None:
    sleeps: list[float] = []
    t = scripted(resp(500), resp(503), _manifest_ok())
    m = _client(t, sleeps).get_manifest(REF)
    assert m.data == MANIFEST and m.digest == digest_bytes(MANIFEST)
    assert len(sleeps) == 2
    # exponential with ±25 % jitter: ~1 s then ~2 s
    assert 0.75 <= sleeps[0] <= 1.25 and 1.5 <= sleeps[1] <= 2.5
    assert t.requests[0].url == "http://127.0.0.1:5000/v2/app/manifests/v1"
    accept = dict(t.requests[0].headers)["Accept"]
    assert OCI_MANIFEST in accept and OCI_INDEX in accept


def test_jitter_is_seeded() -> None:
    def run(seed):
        sleeps: list[float] = []
        RegistryClient(
            scripted(resp(500), resp(500), _manifest_ok()),
            _Creds(None),
            sleep=sleeps.append,
            seed=seed,
        ).get_manifest(REF)
        return sleeps

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_429_honours_retry_after() -> None:
    sleeps: list[float] = []
    _client(scripted(resp(429, Retry_After="7"), _manifest_ok()), sleeps).get_manifest(REF)
    assert sleeps == [7.0]


def test_retry_after_http_date() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=lambda: 1445412470.0) == 10.0
    assert parse_retry_after("garbage") is None


def test_connection_error_retried() -> None:
    sleeps: list[float] = []
    t = scripted(ConnectionFailed("ConnectionError"), _manifest_ok())
    _client(t, sleeps).get_manifest(REF)
    assert len(sleeps) == 1


def test_give_up_message() -> None:
    t = FakeTransport(lambda r: resp(503))
    with pytest.raises(RegistryError) as info:
        _client(t).get_manifest(REF)
    msg = str(info.value)
    assert msg == (
        "registry 127.0.0.1:5000: GET /v2/app/manifests/v1: HTTP 503 (gave up after 4 attempts)"
    )
    assert len(t.requests) == 4


def test_give_up_on_connection_errors_names_registry() -> None:
    t = FakeTransport(lambda r: ConnectionFailed("ConnectionError"))
    with pytest.raises(
        RegistryError, match=r"registry 127.0.0.1:5000: GET /v2/app/manifests/v1: connection failed"
    ):
        _client(t).get_manifest(REF)


def test_no_credential_in_messages() -> None:
    calls = []

    def handler(req):
        calls.append(req)
        if "token" in req.url:
            return resp(200, b'{"token": "BEARERSECRET"}')
        if len(calls) == 1:
            return resp(
                401, WWW_Authenticate='Bearer realm="http://127.0.0.1:5000/token",service="s"'
            )
        return resp(500)

    with pytest.raises(RegistryError) as info:
        _client(FakeTransport(handler), creds=Credentials("user", "PASSWORDSECRET")).get_manifest(
            REF
        )
    msg = str(info.value) + repr(info.value)
    for secret in (
        "BEARERSECRET",
        "PASSWORDSECRET",
        base64.b64encode(b"user:PASSWORDSECRET").decode(),
    ):
        assert secret not in msg
    assert "HTTP 500" in msg
    # the token was actually used
    assert dict(calls[-1].headers)["Authorization"] == "Bearer BEARERSECRET"


def test_404_is_not_retried() -> None:
    body = json.dumps({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]})
    t = scripted(resp(404, body.encode()))
    with pytest.raises(RegistryError, match="HTTP 404 not found .MANIFEST_UNKNOWN"):
        _client(t).get_manifest(REF)


def test_manifest_digest_mismatch() -> None:
    wrong = parse_reference(f"127.0.0.1:5000/app@sha256:{'0' * 64}")
    with pytest.raises(IntegrityError) as info:
        _client(scripted(_manifest_ok())).get_manifest(wrong)
    assert "0" * 64 in str(info.value) and digest_bytes(MANIFEST).hex in str(info.value)
    header = resp(
        200, MANIFEST, Content_Type=OCI_MANIFEST, Docker_Content_Digest="sha256:" + "1" * 64
    )
    with pytest.raises(IntegrityError):
        _client(scripted(header)).get_manifest(REF)


BLOB = random.Random(1).randbytes(300_000)
BLOB_DIGEST = digest_bytes(BLOB)


def test_blob_mismatch_leaves_no_file(tmp_path: Path) -> None:
    corrupt = bytearray(BLOB)
    corrupt[1000] ^= 0xFF
    dest = tmp_path / "blobs" / BLOB_DIGEST.hex
    with pytest.raises(IntegrityError) as info:
        _client(scripted(resp(200, bytes(corrupt)))).fetch_blob(REF, BLOB_DIGEST, dest, len(BLOB))
    assert str(BLOB_DIGEST) in str(info.value)
    assert str(digest_bytes(bytes(corrupt))) in str(info.value)
    assert list((tmp_path / "blobs").iterdir()) == []


def test_blob_too_long_refused(tmp_path: Path) -> None:
    dest = tmp_path / "b"
    with pytest.raises(IntegrityError, match="more than 10 bytes"):
        _client(scripted(resp(200, BLOB))).fetch_blob(REF, BLOB_DIGEST, dest, 10)
    assert list(tmp_path.iterdir()) == []


def test_blob_dropped_midway_is_restarted(tmp_path: Path) -> None:
    broken = resp(200, BLOB)
    broken.break_after = 100_000
    sleeps: list[float] = []
    dest = tmp_path / "b"
    _client(scripted(broken, resp(200, BLOB)), sleeps).fetch_blob(REF, BLOB_DIGEST, dest, len(BLOB))
    assert dest.read_bytes() == BLOB and len(sleeps) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def _registry_with_uploads(store: dict[str, bytes], log: list[str]):
    uploads: dict[str, bytearray] = {}

    def handler(req):
        path = req.url.split("://", 1)[1].split("/", 1)[1]
        log.append(f"{req.method} /{path.split('?')[0]}")
        headers = dict(req.headers)
        if req.method == "HEAD" and "/blobs/" in path:
            d = path.rsplit("/", 1)[1]
            return resp(200, Content_Length=str(len(store[d]))) if d in store else resp(404)
        if req.method == "POST":
            if "mount=" in path:
                return resp(201)
            uploads["u1"] = bytearray()
            return resp(202, Location="/v2/app/blobs/uploads/u1?_state=abc")
        if req.method == "PATCH":
            start, end = map(int, headers["Content-Range"].split("-"))
            assert start == len(uploads["u1"]) and end == start + len(req.body) - 1
            uploads["u1"] += req.body
            return resp(202, Location="/v2/app/blobs/uploads/u1?_state=def")
        if req.method == "PUT" and "/blobs/uploads/" in path:
            assert "_state=" in path
            if req.body == b"":
                data = bytes(uploads["u1"])
            else:
                with req.body() as f:
                    data = f.read()
            d = path.split("digest=")[1].replace("%3A", ":")
            assert str(digest_bytes(data)) == d
            store[d] = data
            return resp(201)
        raise AssertionError(path)

    return FakeTransport(handler)


@pytest.mark.parametrize("mode", ["monolithic", "chunked"])
def test_push_blob_modes(tmp_path: Path, mode: str) -> None:
    src = tmp_path / "blob"
    src.write_bytes(BLOB)
    store: dict[str, bytes] = {}
    log: list[str] = []
    client = _client(_registry_with_uploads(store, log), upload=mode, chunk_size=128 * 1024)
    opener = lambda: open(src, "rb")  # noqa: E731
    assert client.push_blob(REF, BLOB_DIGEST, len(BLOB), opener) == "uploaded"
    assert store[str(BLOB_DIGEST)] == BLOB
    assert client.push_blob(REF, BLOB_DIGEST, len(BLOB), opener) == "skipped"
    patches = log.count("PATCH /v2/app/blobs/uploads/u1")
    assert patches == (3 if mode == "chunked" else 0)
    other = digest_bytes(b"x")
    assert client.push_blob(REF, other, 1, None, mount_from="base") == "mounted"
    c = client.counters
    assert (c.uploaded, c.skipped, c.mounted, c.bytes_uploaded) == (1, 1, 1, len(BLOB))


def test_upload_5xx_restarts_session(tmp_path: Path) -> None:
    src = tmp_path / "blob"
    src.write_bytes(b"data")
    d = digest_bytes(b"data")
    t = scripted(
        resp(404),  # HEAD
        resp(202, Location="/v2/app/blobs/uploads/1"),
        resp(500),  # PUT fails
        resp(202, Location="/v2/app/blobs/uploads/2"),
        resp(201),
    )
    sleeps: list[float] = []
    assert _client(t, sleeps).push_blob(REF, d, 4, lambda: open(src, "rb")) == "uploaded"
    assert (
        t.requests[-1].url
        == f"http://127.0.0.1:5000/v2/app/blobs/uploads/2?digest=sha256%3A{d.hex}"
    )
    assert len(sleeps) == 1


def test_http_only_for_loopback_or_insecure() -> None:
    for host in ("localhost:5000", "127.0.0.1", "127.9.9.9:80", "[::1]:5000", "localhost"):
        assert is_loopback(host), host
        assert registry_url(host).startswith("http://")
    for host in ("10.0.0.1:5000", "r.example.com", "localhost.example.com"):
        assert not is_loopback(host)
        assert registry_url(host).startswith("https://")
    assert registry_url("r.lan:5000", {"r.lan:5000"}) == "http://r.lan:5000"
    t = scripted(_manifest_ok())
    _client(t).get_manifest(parse_reference("alpine"))
    assert t.requests[0].url == "https://registry-1.docker.io/v2/library/alpine/manifests/latest"


def test_sha256_helper_agrees() -> None:
    assert BLOB_DIGEST.hex == hashlib.sha256(BLOB).hexdigest()


def test_index_that_is_not_a_json_object_is_a_registry_error() -> None:
    # Served as an index but a JSON array: an error naming the manifest, not an AttributeError.
    body = b"[]"
    t = scripted(resp(200, body, Content_Type=OCI_INDEX))
    client = _client(t)
    with pytest.raises(RegistryError, match=f"manifest {digest_bytes(body)}: expected a JSON object"):
        client.resolve_platform(REF, Platform("linux", "amd64"))
