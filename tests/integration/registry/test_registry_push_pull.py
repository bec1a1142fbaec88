"""Push and pull against a real docker-registry, checked with skopeo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pyimg.core.digest import Digest
from pyimg.oci.platforms import parse_platform
from pyimg.registry.client import RegistryClient
from pyimg.registry.reference import parse_reference
from regtestlib import blob_files, make_image, make_index, skopeo

pytestmark = pytest.mark.slow


def _client(**kw) -> RegistryClient:
    return RegistryClient(sleep=lambda s: None, **kw)


@pytest.mark.parametrize("upload", ["monolithic", "chunked"])
def test_push_then_skopeo_and_pull_agree(registry, tmp_path: Path, upload: str) -> None:
    src = tmp_path / "src"
    desc = make_image(
        src, tag="v1", layers=[{"a.txt": b"A" * 5000}, {"b.bin": bytes(range(256)) * 300}]
    )
    client = _client(upload=upload, chunk_size=4096)
    repo = f"{registry.host}/push-{upload}"
    digest = client.push_layout(src, f"{repo}:v1", tags=["latest"])
    assert str(digest) == desc["digest"]
    assert client.counters.uploaded == 3 and client.counters.mounted == 0

    inspect = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{repo}:v1").stdout)
    assert inspect["Digest"] == desc["digest"]
    latest = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{repo}:latest").stdout)
    assert latest["Digest"] == desc["digest"]

    copied = tmp_path / "skopeo"
    skopeo("copy", "--src-tls-verify=false", f"docker://{repo}:v1", f"oci:{copied}:v1")
    assert blob_files(copied) == blob_files(src)

    pulled = tmp_path / "pulled"
    result = client.pull_to_layout(f"{repo}:v1", pulled)
    assert result.manifest.digest == Digest.parse(desc["digest"])
    assert blob_files(pulled) == blob_files(src)
    # skopeo can read what we wrote
    skopeo("inspect", f"oci:{pulled}:v1")


def test_mount_and_repush(registry, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_image(src, tag="v1", layers=[{"m.txt": b"mount me"}])
    client = _client()
    client.push_layout(src, f"{registry.host}/mount-a:v1")
    assert client.counters.uploaded == 2

    other = _client()
    other.push_layout(src, f"{registry.host}/mount-b:v1", mount_from="mount-a")
    assert (other.counters.mounted, other.counters.uploaded) == (2, 0)

    again = _client()
    again.push_layout(src, f"{registry.host}/mount-b:v1")
    assert again.counters.uploaded == 0 and again.counters.mounted == 0
    assert again.counters.manifests_skipped == 1


def test_index_push_and_platform_pull(registry, tmp_path: Path) -> None:
    src = tmp_path / "src"
    desc = make_index(src, tag="multi")
    client = _client()
    repo = f"{registry.host}/multi"
    assert str(client.push_layout(src, f"{repo}:multi")) == desc["digest"]
    raw = json.loads(
        skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{repo}:multi").stdout
    )
    assert len(raw["manifests"]) == 2

    arm = client.pull_to_layout(f"{repo}:multi", tmp_path / "arm", platform=parse_platform("linux/arm64", "test"))
    assert arm.manifest.digest == Digest.parse(raw["manifests"][1]["digest"])
    config = json.loads(
        (
            tmp_path / "arm" / "blobs" / "sha256" / arm.manifest.manifest().config.digest.hex
        ).read_bytes()
    )
    assert config["architecture"] == "arm64"

    whole = client.pull_to_layout(f"{repo}:multi", tmp_path / "whole")
    assert whole.manifest.is_index
    assert blob_files(tmp_path / "whole") == blob_files(src)

    m = client.resolve_platform(parse_reference(f"{repo}:multi"), parse_platform("linux/amd64", "test"))
    assert m.digest == Digest.parse(raw["manifests"][0]["digest"])


def test_lazy_pull_then_push_mounts(registry, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_image(src, tag="v1", layers=[{"lazy.txt": b"z" * 1000}])
    client = _client()
    client.push_layout(src, f"{registry.host}/lazy-src:v1")
    lazy = client.pull_to_layout(f"{registry.host}/lazy-src:v1", tmp_path / "lazy", lazy=True)
    assert len(lazy.missing) == 1
    assert not (tmp_path / "lazy" / "blobs" / "sha256" / lazy.missing[0].digest.hex).exists()

    pusher = _client()
    pusher.push_layout(
        tmp_path / "lazy",
        f"{registry.host}/lazy-dst:v1",
        mount_from=parse_reference(f"{registry.host}/lazy-src"),
    )
    assert pusher.counters.mounted == 2 and pusher.counters.uploaded == 0
