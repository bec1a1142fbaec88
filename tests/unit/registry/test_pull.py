"""Pulls over a fake registry: the layout they write, lazy layers, platforms, model types."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyimg.errors import RegistryError
from pyimg.oci.layout import REF_NAME, Layout
from pyimg.oci.model import Descriptor, Manifest, Platform
from pyimg.registry.connection import Connection
from pyimg.registry.pull import get_manifest, pull_to_layout, resolve_platform
from pyimg.registry.reference import parse_reference
from regfakes import FakeRegistry
from regimages import serve_image, serve_index

REF = parse_reference("127.0.0.1:5000/app:v1")


def _conn(registry: FakeRegistry) -> Connection:
    return Connection(registry.transport, sleep=lambda s: None)


def test_pull_writes_a_layout_that_the_oci_reader_reads(tmp_path: Path) -> None:
    registry = FakeRegistry()
    desc = serve_image(registry, "app", "v1")
    result = pull_to_layout(_conn(registry), REF, tmp_path / "out")
    assert result.fetched_blobs == 3 and result.missing == ()
    assert result.reference == REF.with_digest(desc.digest)
    layout = Layout(tmp_path / "out")
    entry = layout.resolve("v1")
    assert entry == desc.with_annotations({REF_NAME: "v1"})
    manifest = layout.manifest(entry)
    assert manifest == result.manifest.manifest()
    assert all(layout.has_blob(d.digest) for d in (manifest.config, *manifest.layers))


def test_lazy_pull_lists_the_layers_it_left_out_as_descriptors(tmp_path: Path) -> None:
    registry = FakeRegistry()
    serve_image(registry, "app", "v1")
    result = pull_to_layout(_conn(registry), REF, tmp_path / "out", lazy=True)
    manifest = result.manifest.manifest()
    assert result.missing == manifest.layers
    assert all(isinstance(d, Descriptor) for d in result.missing)
    layout = Layout(tmp_path / "out")
    assert layout.has_blob(manifest.config.digest)
    assert not layout.has_blob(manifest.layers[0].digest)


def test_platform_pull_names_the_image_with_its_index_entry(tmp_path: Path) -> None:
    registry = FakeRegistry()
    amd, arm = serve_index(registry, "app", "v1")
    result = pull_to_layout(_conn(registry), REF, tmp_path / "out", Platform("linux", "arm64"))
    assert result.manifest.digest == arm.digest
    (entry,) = Layout(tmp_path / "out").index.manifests
    assert entry == arm.with_annotations({REF_NAME: "v1"})
    top = get_manifest(_conn(registry), REF)
    assert resolve_platform(_conn(registry), REF, Platform("linux", "amd64"), top).digest == (
        amd.digest
    )
    with pytest.raises(RegistryError, match=r"no manifest for platform linux/s390x \(available: "
                       r"linux/amd64, linux/arm64\)"):
        resolve_platform(_conn(registry), REF, Platform("linux", "s390x"))


def test_a_failed_pull_leaves_no_layout(tmp_path: Path) -> None:
    # index.json and oci-layout come last: a directory is a layout only once its blobs are in.
    registry = FakeRegistry()
    desc = serve_image(registry, "app", "v1")
    manifest = get_manifest(_conn(registry), REF).manifest()
    del registry.blobs[("app", str(manifest.layers[0].digest))]
    with pytest.raises(RegistryError, match="HTTP 404"):
        pull_to_layout(_conn(registry), REF, tmp_path / "out")
    assert not (tmp_path / "out" / "oci-layout").exists()
    assert not (tmp_path / "out" / "index.json").exists()
    assert not (tmp_path / "out" / "blobs" / "sha256" / desc.digest.hex).exists()


def test_fetched_manifests_are_read_as_model_values() -> None:
    registry = FakeRegistry()
    desc = serve_image(registry, "app", "v1")
    fetched = get_manifest(_conn(registry), REF)
    assert fetched.descriptor() == desc
    assert isinstance(fetched.manifest(), Manifest)
    # A registry may serve anything: what does not parse is a RegistryError naming the digest.
    with pytest.raises(RegistryError, match=f"manifest {desc.digest}: not an image index"):
        fetched.index()
