"""Descriptors, manifests and indexes: canonical bytes, Docker schema-2 input, errors."""

from __future__ import annotations

import json

import pytest
from pyimg.core.digest import digest_bytes
from pyimg.errors import UserInputError
from pyimg.oci import media_types as mt
from pyimg.oci.model import Descriptor, Index, Manifest, Platform, parse_index, parse_manifest

D = digest_bytes(b"x")


def test_manifest_canonical_bytes_round_trip() -> None:
    m = Manifest(
        config=Descriptor(mt.OCI_CONFIG, D, 1),
        layers=(Descriptor(mt.OCI_LAYER_GZIP, D, 2, (("k", "v"),)),),
        annotations=(("z", "1"), ("a", "2")),
    )
    data = m.to_bytes()
    assert b" " not in data
    assert data == json.dumps(json.loads(data), sort_keys=True, separators=(",", ":")).encode()
    assert parse_manifest(data, "m").to_bytes() == data
    assert m.descriptor().digest == digest_bytes(data)


def test_reads_docker_schema2() -> None:
    docker = {
        "schemaVersion": 2,
        "mediaType": mt.DOCKER_MANIFEST,
        "config": {"mediaType": mt.DOCKER_CONFIG, "digest": str(D), "size": 3},
        "layers": [{"mediaType": mt.DOCKER_LAYER_GZIP, "digest": str(D), "size": 4}],
    }
    m = parse_manifest(json.dumps(docker).encode(), "d")
    assert m.media_type == mt.DOCKER_MANIFEST and m.layers[0].size == 4
    lst = {
        "schemaVersion": 2,
        "mediaType": mt.DOCKER_MANIFEST_LIST,
        "manifests": [
            {
                "mediaType": mt.DOCKER_MANIFEST,
                "digest": str(D),
                "size": 5,
                "platform": {"os": "linux", "architecture": "arm", "variant": "v7"},
            }
        ],
    }
    idx = parse_index(json.dumps(lst).encode(), "l")
    assert idx.manifests[0].platform == Platform("linux", "arm", "v7")
    assert mt.TO_OCI[mt.DOCKER_LAYER_GZIP] == mt.OCI_LAYER_GZIP


def test_index_without_media_type_is_oci() -> None:
    idx = parse_index(b'{"schemaVersion":2,"manifests":[]}', "i")
    assert idx.media_type == mt.OCI_INDEX
    assert Index(()).to_bytes() == (
        b'{"manifests":[],"mediaType":"application/vnd.oci.image.index.v1+json","schemaVersion":2}'
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{", "not valid JSON"),
        (b"[]", "expected a JSON object"),
        (b'{"schemaVersion":2,"manifests":[]}', "not an image manifest"),
        (b'{"schemaVersion":1,"layers":[],"config":{}}', "schemaVersion"),
        (
            b'{"schemaVersion":2,"layers":[],"config":{"digest":"sha256:zz","size":1,"mediaType":"x"}}',
            "sha256",
        ),
        (
            b'{"schemaVersion":2,"layers":[{"digest":"%s","mediaType":"x"}],"config":{}}'
            % str(D).encode(),
            "lacks",
        ),
    ],
)
def test_bad_manifests(data: bytes, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        parse_manifest(data, "blob sha256:abc")


def test_layer_compression_of_media_types() -> None:
    assert mt.layer_compression(mt.DOCKER_LAYER_GZIP) == "gzip"
    assert mt.layer_compression(mt.OCI_LAYER_ZSTD) == "zstd"
    assert mt.layer_compression(mt.OCI_LAYER) == "none"
    with pytest.raises(ValueError):
        mt.layer_compression(mt.OCI_CONFIG)
