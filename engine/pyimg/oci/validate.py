"""The shared validator: every digest, size, media type and diff_id of an image layout."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pyimg.core.digest import CHUNK, Digest, digest_file
from pyimg.errors import IntegrityError, PyimgError
from pyimg.oci import media_types as mt
from pyimg.oci.compress import DECOMPRESSION_ERRORS, detect_compression, open_decompressed
from pyimg.oci.config import config_platform, layer_diff_ids
from pyimg.oci.layout import Layout
from pyimg.oci.model import Descriptor, load_json, parse_index, parse_manifest, sniff_media_type

__all__ = ["validate_image", "validate_layout"]


class _Checker:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.where = layout.what
        self.done: set[Digest] = set()

    def blob(self, desc: Descriptor) -> Path:
        """Check that the blob exists with the descriptor's size and digest."""
        path = self.layout.blob_path(desc.digest)
        if not path.is_file():
            raise IntegrityError(f"{self.where}: blob {desc.digest} ({desc.media_type}) is missing")
        actual, size = digest_file(path)
        if size != desc.size:
            raise IntegrityError(
                f"{self.where}: blob {desc.digest}: size {size}, descriptor says {desc.size}"
            )
        if actual != desc.digest:
            raise IntegrityError(f"{self.where}: blob {desc.digest} hashes to {actual}")
        return path

    def small(self, desc: Descriptor) -> bytes:
        return self.blob(desc).read_bytes()

    def node(self, desc: Descriptor) -> None:
        if desc.digest in self.done:
            return
        if desc.media_type in mt.INDEXES:
            self.index(desc)
        elif desc.media_type in mt.MANIFESTS:
            self.manifest(desc)
        else:
            raise IntegrityError(
                f"{self.where}: {desc.digest}: media type {desc.media_type!r} is neither an "
                "image manifest nor an index"
            )
        self.done.add(desc.digest)

    def _own_type(self, data: bytes, desc: Descriptor) -> None:
        declared = sniff_media_type(load_json(data, f"{self.where}: blob {desc.digest}"))
        if declared != desc.media_type:
            raise IntegrityError(
                f"{self.where}: blob {desc.digest}: mediaType {declared!r} but the descriptor "
                f"says {desc.media_type!r}"
            )

    def index(self, desc: Descriptor) -> None:
        data = self.small(desc)
        self._own_type(data, desc)
        index = parse_index(data, f"{self.where}: index {desc.digest}")
        for child in index.manifests:
            self.node(child)
            if child.platform is not None and child.media_type in mt.MANIFESTS:
                m = parse_manifest(self.small(child), f"{self.where}: manifest {child.digest}")
                cfg = load_json(self.small(m.config), f"{self.where}: config {m.config.digest}")
                actual = config_platform(cfg)
                if (actual.os, actual.architecture) != (
                    child.platform.os,
                    child.platform.architecture,
                ):
                    raise IntegrityError(
                        f"{self.where}: index {desc.digest}: entry {child.digest} claims platform "
                        f"{child.platform}, its config says {actual}"
                    )

    def manifest(self, desc: Descriptor) -> None:
        data = self.small(desc)
        self._own_type(data, desc)
        m = parse_manifest(data, f"{self.where}: manifest {desc.digest}")
        if m.config.media_type not in mt.CONFIGS:
            raise IntegrityError(
                f"{self.where}: manifest {desc.digest}: config {m.config.digest} has media type "
                f"{m.config.media_type!r}"
            )
        cfg = load_json(self.small(m.config), f"{self.where}: config {m.config.digest}")
        diff_ids = layer_diff_ids(cfg, m, f"{self.where}: manifest {desc.digest}")
        for i, (layer, diff_id) in enumerate(zip(m.layers, diff_ids, strict=True)):
            self.layer(layer, diff_id, f"layers[{i}] of manifest {desc.digest}")

    def layer(self, desc: Descriptor, diff_id: Digest, what: str) -> None:
        if desc.media_type not in mt.LAYERS:
            raise IntegrityError(
                f"{self.where}: {what}: blob {desc.digest} has media type {desc.media_type!r}"
            )
        path = self.blob(desc)
        expected = mt.layer_compression(desc.media_type)
        h = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                found = detect_compression(f.read(4))
                f.seek(0)
                if found != expected:
                    raise IntegrityError(
                        f"{self.where}: {what}: blob {desc.digest} is {found}-compressed but its "
                        f"media type {desc.media_type} says {expected}"
                    )
                reader, _ = open_decompressed(f)
                while chunk := reader.read(CHUNK):
                    h.update(chunk)
        except DECOMPRESSION_ERRORS as e:
            raise IntegrityError(
                f"{self.where}: {what}: blob {desc.digest} does not decompress: {e}"
            ) from None
        actual = Digest("sha256", h.hexdigest())
        if actual != diff_id:
            raise IntegrityError(
                f"{self.where}: {what}: blob {desc.digest} uncompresses to {actual}, "
                f"config says diff_id {diff_id}"
            )


def validate_image(layout_dir: Path, digest: Digest | str | None = None) -> Descriptor:
    """Validate one manifest or index of the layout (by digest, else the `latest` / only entry).

    Checks every reachable blob's existence, size and digest, media types, each manifest's own
    mediaType field, config diff_ids against every decompressed layer, and index platforms.
    Raises IntegrityError naming the blob; returns the validated root descriptor.
    """
    layout = Layout(Path(layout_dir))
    if digest is None:
        root = layout.resolve("latest")
    else:
        d = Digest.parse(digest) if isinstance(digest, str) else digest
        found = layout.find(d)
        if found is None:
            raise IntegrityError(f"{layout.what}: {d} is not in index.json")
        root = found
    _Checker(layout).node(root)
    return root


def validate_layout(layout_dir: Path) -> list[Descriptor]:
    """Validate every entry of the layout's index.json (see `validate_image`)."""
    try:
        layout = Layout(Path(layout_dir))
    except PyimgError as e:
        raise IntegrityError(str(e)) from None
    checker = _Checker(layout)
    for desc in layout.index.manifests:
        checker.node(desc)
    return list(layout.index.manifests)
