"""Reference parsing: Docker Hub normalization, hosts with ports, tags, digests, errors."""

from __future__ import annotations

import pytest
from pyimg.errors import UsageError
from pyimg.registry.reference import parse_reference

H = "a" * 64


@pytest.mark.parametrize(
    "text, registry, repository, tag, digest, endpoint",
    [
        ("alpine", "docker.io", "library/alpine", None, None, "registry-1.docker.io"),
        ("alpine:3.20", "docker.io", "library/alpine", "3.20", None, "registry-1.docker.io"),
        ("user/app:v1", "docker.io", "user/app", "v1", None, "registry-1.docker.io"),
        ("docker.io/alpine", "docker.io", "library/alpine", None, None, "registry-1.docker.io"),
        ("index.docker.io/x/y:t", "docker.io", "x/y", "t", None, "registry-1.docker.io"),
        ("localhost:5000/x", "localhost:5000", "x", None, None, "localhost:5000"),
        ("localhost/x:1", "localhost", "x", "1", None, "localhost"),
        ("127.0.0.1:5000/a/b/c:t", "127.0.0.1:5000", "a/b/c", "t", None, "127.0.0.1:5000"),
        ("ghcr.io/o/r@sha256:" + H, "ghcr.io", "o/r", None, "sha256:" + H, "ghcr.io"),
        ("ghcr.io/o/r:t@sha256:" + H, "ghcr.io", "o/r", "t", "sha256:" + H, "ghcr.io"),
        ("[::1]:5000/x", "[::1]:5000", "x", None, None, "[::1]:5000"),
        (
            "reg.example.com/a_b/c-d.e__f:v1.2-rc_3",
            "reg.example.com",
            "a_b/c-d.e__f",
            "v1.2-rc_3",
            None,
            "reg.example.com",
        ),
    ],
)
def test_parse(text, registry, repository, tag, digest, endpoint) -> None:
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.endpoint) == (
        registry,
        repository,
        tag,
        endpoint,
    )
    assert (str(ref.digest) if ref.digest else None) == digest


def test_identifier_and_str() -> None:
    assert parse_reference("alpine").identifier == "latest"
    assert str(parse_reference("alpine:3")) == "docker.io/library/alpine:3"
    pinned = parse_reference(f"r.io/x:t@sha256:{H}")
    assert pinned.identifier == f"sha256:{H}"
    assert str(pinned) == f"r.io/x:t@sha256:{H}"
    assert parse_reference(str(pinned)) == pinned


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty"),
        (" alpine", "spaces"),
        ("Alpine", "lowercase"),
        ("r.io/x:bad tag", "bad tag"),
        ("r.io/x:-t", "bad tag"),
        ("r.io/x@sha256:abc", "not a sha256"),
        ("r.io/x@md5:" + H, "not a sha256"),
        ("r.io/", "missing repository"),
        ("r.io/a//b", "bad path component"),
        ("r.io/a/-b", "bad path component"),
        ("bad_host.io:x:5000/a", "bad"),
    ],
)
def test_invalid(text, fragment) -> None:
    with pytest.raises(UsageError) as info:
        parse_reference(text)
    assert repr(text) in str(info.value)
    assert fragment in str(info.value)
