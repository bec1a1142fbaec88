"""The `oci_index` builtin: a multi-platform image index from image layouts."""

from __future__ import annotations

from pyimg.actions._common import (
    input_path,
    output_dir,
    output_with_suffix,
    params_dict,
    str_dict,
    write_digest_file,
)
from pyimg.actions.builtins import builtin
from pyimg.core.builtin import BuiltinCall
from pyimg.errors import UserInputError
from pyimg.oci import media_types as mt
from pyimg.oci.config import config_platform
from pyimg.oci.layout import REF_NAME, Layout, LayoutWriter, walk
from pyimg.oci.model import Descriptor, Index, Platform, load_json

__all__ = ["oci_index"]


@builtin("oci_index")
def oci_index(call: BuiltinCall) -> None:
    """Combine single-platform images into one OCI image index.

    params: {
      images: [EXEC_PATH]      declared input directories, each an OCI layout (e.g. an
                               `oci_image` output) whose `latest` (or only) entry is an image
                               manifest; the index lists them in this order
      annotations: {str: str}  optional index annotations
    }
    Each entry's `platform` (os, architecture, variant, os.version, os.features) comes from that
    image's config; two images with the same platform are an error.
    outputs: one directory (in output_dirs): an OCI layout holding the index and every blob of
    every image (hard links), its index.json entry annotated ref.name=latest; and one file
    ending in ".digest": `sha256:<index hex>` (no newline).
    """
    params = params_dict(call, {"images", "annotations"}, "oci_index")
    images = params.get("images") or []
    if not isinstance(images, list) or not images:
        raise UserInputError("oci_index: images must be a non-empty list of exec paths")
    annotations = str_dict(params, "annotations", "oci_index")
    writer = LayoutWriter(output_dir(call, "oci_index"))
    digest_out = output_with_suffix(call, ".digest", "oci_index")
    entries: list[Descriptor] = []
    seen: dict[Platform, str] = {}
    for i, image in enumerate(images):
        call.check_cancelled()
        layout = Layout(
            input_path(call, image, f"oci_index: images[{i}]"), what=image, lazy=call.lazy_blobs
        )
        root = layout.resolve("latest")
        if root.media_type not in mt.MANIFESTS:
            raise UserInputError(
                f"oci_index: images[{i}] ({image}) is {root.media_type!r}, not an image manifest"
            )
        m = layout.manifest(root)
        cfg = load_json(layout.read_blob(m.config), f"{image}: config {m.config.digest}")
        platform = config_platform(cfg)
        if not platform.os or not platform.architecture:
            raise UserInputError(f"oci_index: images[{i}] ({image}): config lacks os/architecture")
        if platform in seen:
            raise UserInputError(
                f"oci_index: images[{i}] ({image}) and {seen[platform]} are both {platform}"
            )
        seen[platform] = image
        for desc in walk(layout, root):
            if not layout.is_lazy(desc.digest):  # a pulled base's layer stays out until needed
                writer.add_file(desc.digest, layout.blob_path(desc.digest),
                                link=call.may_link(image))
        entries.append(Descriptor(root.media_type, root.digest, root.size, platform=platform))
    index = Index(tuple(entries), tuple(sorted(annotations.items())))
    data = index.to_bytes()
    digest = writer.add_bytes(data)
    writer.finish([Descriptor(mt.OCI_INDEX, digest, len(data), ((REF_NAME, "latest"),))])
    assert digest_out is not None
    write_digest_file(digest_out, digest)
