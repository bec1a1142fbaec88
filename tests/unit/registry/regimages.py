"""Small images for registry unit tests: in an OCI layout, or served by a FakeRegistry."""

from __future__ import annotations

from pathlib import Path

from pyimg.core.digest import canonical_json
from pyimg.oci import media_types as mt
from pyimg.oci.layout import REF_NAME, LayoutWriter
from pyimg.oci.model import Descriptor, Index, Manifest, Platform, descriptor_for_bytes
from regfakes import FakeRegistry


def image_parts(arch: str = "amd64") -> tuple[Manifest, dict[Descriptor, bytes]]:
    """A one-layer image (its bytes need not unpack: the client moves blobs, not files)."""
    config = canonical_json({"architecture": arch, "os": "linux", "rootfs": {"diff_ids": []}})
    layer = f"layer of {arch}".encode() * 100
    blobs = {
        descriptor_for_bytes(mt.OCI_CONFIG, config): config,
        descriptor_for_bytes(mt.OCI_LAYER_GZIP, layer): layer,
    }
    config_desc, layer_desc = blobs
    return Manifest(config_desc, (layer_desc,)), blobs


def write_layout(root: Path, tag: str = "v1") -> Descriptor:
    """An OCI layout holding one image named `tag`; returns its manifest's descriptor."""
    manifest, blobs = image_parts()
    writer = LayoutWriter(root)
    for data in blobs.values():
        writer.add_bytes(data)
    writer.add_bytes(manifest.to_bytes())
    desc = manifest.descriptor()
    writer.finish([desc.with_annotations({REF_NAME: tag})])
    return desc


def serve_image(registry: FakeRegistry, repository: str, tag: str, arch: str = "amd64") -> Descriptor:
    manifest, blobs = image_parts(arch)
    for data in blobs.values():
        registry.put_blob(repository, data)
    registry.put_manifest(repository, mt.OCI_MANIFEST, manifest.to_bytes(), tag)
    return manifest.descriptor()


def serve_index(registry: FakeRegistry, repository: str, tag: str) -> tuple[Descriptor, ...]:
    """An index of an amd64 and an arm64 image; returns the images' entries."""
    entries = tuple(
        serve_image(registry, repository, f"only-{arch}", arch).with_platform(
            Platform("linux", arch)
        )
        for arch in ("amd64", "arm64")
    )
    registry.put_manifest(repository, mt.OCI_INDEX, Index(entries).to_bytes(), tag)
    return entries
