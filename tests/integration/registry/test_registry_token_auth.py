"""Bearer token auth against a real registry, with a tiny ES256 JWT token issuer on loopback."""

from __future__ import annotations

import base64
import datetime
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from pyimg.errors import RegistryError
from pyimg.registry.auth import CredentialStore
from pyimg.registry.client import RegistryClient
from regtestlib import blob_files, make_image, start_registry

pytestmark = pytest.mark.slow

USER, PASSWORD = "tok", "en-secret"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenIssuer:
    """Issues JWTs granting what was asked to USER (pull,push) and only pull to anonymous."""

    def __init__(self, workdir: Path) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pyimg test issuer")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_path = workdir / "issuer.pem"
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.cert_der = cert.public_bytes(serialization.Encoding.DER)
        self.requests: list[dict] = []
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                auth = self.headers.get("Authorization", "")
                user = None
                if auth.startswith("Basic "):
                    u, _, p = base64.b64decode(auth[6:]).decode().partition(":")
                    if (u, p) != (USER, PASSWORD):
                        self.send_response(401)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    user = u
                issuer.requests.append({"user": user, "scope": query.get("scope", [])})
                body = json.dumps(
                    {"token": issuer.sign(user, query.get("scope", [])), "expires_in": 300}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def sign(self, user: str | None, scopes: list[str]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        access = []
        for scope in scopes:
            kind, name, actions = scope.split(":")
            granted = [a for a in actions.split(",") if user or a == "pull"]
            access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(self.cert_der).decode()]}
        claims = {
            "iss": "pyimg-test-issuer",
            "sub": user or "",
            "aud": "pyimg-test-registry",
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": f"{now}-{len(self.requests)}",
            "access": access,
        }
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        der = self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("token-registry")
    issuer = TokenIssuer(root)
    reg = start_registry(
        root,
        "auth:\n  token:\n"
        f"    realm: {issuer.realm}\n"
        "    service: pyimg-test-registry\n"
        "    issuer: pyimg-test-issuer\n"
        f"    rootcertbundle: {issuer.cert_path}\n",
    )
    yield reg, issuer
    reg.stop()
    issuer.close()


def test_token_auth_push_pull_mount(token_registry, tmp_path: Path) -> None:
    reg, issuer = token_registry
    src = tmp_path / "src"
    desc = make_image(src, layers=[{"t": b"token"}])

    with pytest.raises(RegistryError, match="HTTP 401"):
        RegistryClient().push_layout(src, f"{reg.host}/tok-a:v1")  # anonymous: pull only

    config = tmp_path / "config.json"
    config.write_text(json.dumps({"auths": {reg.host: {"username": USER, "password": PASSWORD}}}))
    client = RegistryClient(credentials=CredentialStore(config))
    assert str(client.push_layout(src, f"{reg.host}/tok-a:v1")) == desc["digest"]
    # one token for the push scope, reused for every request of the push
    assert client.token_fetches == 1
    assert issuer.requests[-1] == {"user": USER, "scope": ["repository:tok-a:pull,push"]}

    client.push_layout(src, f"{reg.host}/tok-b:v1", mount_from="tok-a")
    assert client.counters.mounted == 2
    assert sorted(issuer.requests[-1]["scope"]) == [
        "repository:tok-a:pull",
        "repository:tok-b:pull,push",
    ]

    anon = RegistryClient()
    anon.pull_to_layout(f"{reg.host}/tok-b:v1", tmp_path / "pulled")
    assert blob_files(tmp_path / "pulled") == blob_files(src)
