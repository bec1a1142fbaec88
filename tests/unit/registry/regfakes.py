"""A fake Transport for registry unit tests: scripted responses, recorded requests."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from pyimg.registry.transport import ConnectionFailed, Request
from requests.structures import CaseInsensitiveDict


@dataclass
class FakeResponse:
    status: int
    body: bytes = b""
    headers: CaseInsensitiveDict = field(default_factory=CaseInsensitiveDict)
    url: str = "http://fake/"
    # Raise ConnectionFailed after yielding this many bytes (a dropped connection).
    break_after: int | None = None
    closed: bool = False

    def iter_bytes(self, chunk_size: int) -> Iterator[bytes]:
        end = len(self.body) if self.break_after is None else self.break_after
        for i in range(0, end, chunk_size):
            yield self.body[i : min(i + chunk_size, end)]
        if self.break_after is not None:
            raise ConnectionFailed("connection broken while reading (fake)")

    def read(self, limit: int | None = None) -> bytes:
        data = b"".join(self.iter_bytes(1 << 16))
        self.close()
        return data

    def close(self) -> None:
        self.closed = True


def resp(status: int, body: bytes = b"", **headers: str) -> FakeResponse:
    h = CaseInsensitiveDict({k.replace("_", "-"): v for k, v in headers.items()})
    return FakeResponse(status, body, h)


class FakeTransport:
    """Answers each request with `handler(request)`; an exception instance is raised instead."""

    def __init__(self, handler: Callable[[Request], FakeResponse | Exception]) -> None:
        self.handler = handler
        self.requests: list[Request] = []

    def send(self, request: Request) -> FakeResponse:
        self.requests.append(request)
        if callable(request.body):
            with request.body() as f:
                f.read()
        out = self.handler(request)
        if isinstance(out, Exception):
            raise out
        return out


def scripted(*answers: FakeResponse | Exception) -> FakeTransport:
    """A transport that gives `answers` in order (then fails the test)."""
    queue = list(answers)

    def handler(request: Request) -> FakeResponse | Exception:
        assert queue, f"unexpected request {request.method} {request.url}"
        return queue.pop(0)

    return FakeTransport(handler)


class FakeRegistry:
    """An in-memory registry behind a FakeTransport: manifests by tag or digest, blobs, monolithic
    uploads and cross-repository mounts (refused, with an upload session instead, when
    `mounts` is False). `log` records `METHOD path` of each request."""

    def __init__(self, mounts: bool = True, referrers_api: bool = False) -> None:
        self.blobs: dict[tuple[str, str], bytes] = {}  # (repository, digest) -> bytes
        self.manifests: dict[tuple[str, str], tuple[str, bytes]] = {}  # (repo, tag|digest)
        self.mounts = mounts
        # With `referrers_api`, GET /v2/<repo>/referrers/<digest> answers and a manifest PUT
        # with a subject gets the OCI-Subject header; without it both are unknown (404).
        self.referrers_api = referrers_api
        self.log: list[str] = []
        self.transport = FakeTransport(self._handle)

    def put_blob(self, repository: str, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        self.blobs[(repository, digest)] = data
        return digest

    def put_manifest(self, repository: str, media_type: str, data: bytes, tag: str) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        for key in (digest, tag):
            self.manifests[(repository, key)] = (media_type, data)
        return digest

    def _handle(self, req: Request) -> FakeResponse:
        parts = urlsplit(req.url)
        query = dict(parse_qsl(parts.query))
        self.log.append(f"{req.method} {parts.path}")
        repo, _, rest = parts.path.removeprefix("/v2/").partition("/blobs/")
        if rest.startswith("uploads/"):
            if req.method == "POST" and "mount" in query:
                if self.mounts and (query["from"], query["mount"]) in self.blobs:
                    self.blobs[(repo, query["mount"])] = self.blobs[(query["from"], query["mount"])]
                    return resp(201)
            if req.method == "POST":
                return resp(202, Location=f"/v2/{repo}/blobs/uploads/session")
            if callable(req.body):
                with req.body() as f:
                    data = f.read()
            else:
                data = req.body or b""
            assert self.put_blob(repo, data) == query["digest"]
            return resp(201)
        if rest:
            data = self.blobs.get((repo, rest))
            if data is None:
                return resp(404)
            return resp(200, b"" if req.method == "HEAD" else data, Content_Length=str(len(data)))
        if self.referrers_api and "/referrers/" in parts.path:
            return self._referrers(*parts.path.removeprefix("/v2/").split("/referrers/"))
        repo, _, ref = parts.path.removeprefix("/v2/").partition("/manifests/")
        if req.method == "PUT":
            assert isinstance(req.body, bytes)
            self.put_manifest(repo, dict(req.headers)["Content-Type"], req.body, ref)
            subject = json.loads(req.body).get("subject")
            if self.referrers_api and subject:
                return resp(201, OCI_Subject=subject["digest"])
            return resp(201)
        found = self.manifests.get((repo, ref))
        if found is None:
            return resp(404)
        media_type, data = found
        return resp(200, b"" if req.method == "HEAD" else data, Content_Type=media_type)

    def _referrers(self, repo: str, digest: str) -> FakeResponse:
        found = []
        for (r, key), (media_type, data) in sorted(self.manifests.items()):
            doc = json.loads(data)
            if r == repo and key.startswith("sha256:") and (doc.get("subject") or {}).get("digest") == digest:
                found.append({"mediaType": media_type, "digest": key, "size": len(data),
                              "artifactType": doc.get("artifactType")})
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                 "manifests": found}
        return resp(200, json.dumps(index).encode(),
                    Content_Type="application/vnd.oci.image.index.v1+json")
