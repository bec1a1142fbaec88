"""The `oci_load` builtin: a `docker load` / `podman load` tarball from an image layout."""

from __future__ import annotations

from pathlib import Path

from pyimg.actions._common import input_path, only_input, params_dict
from pyimg.actions.builtins import builtin
from pyimg.core.builtin import BuiltinCall
from pyimg.errors import UserInputError
from pyimg.oci import media_types as mt
from pyimg.oci.config import config_platform
from pyimg.oci.docker_archive import write_docker_archive
from pyimg.oci.layout import Layout
from pyimg.oci.model import Descriptor, load_json
from pyimg.oci.platforms import match_platform, parse_platform

__all__ = ["oci_load"]


@builtin("oci_load")
def oci_load(call: BuiltinCall) -> None:
    """Write a docker-archive tarball of one image.

    params: {
      repo_tags: [str]    full references, e.g. ["example.com/app:1.0"]; each needs a tag
      image: EXEC_PATH    optional: the input directory holding the image's OCI layout; may be
                          omitted when that directory is the only input
      platform: str|null  "os/arch[/variant]" the user asked for: the image of an index to load;
                          a single image must be of that platform
      host_platform: str|null  the running machine's platform: the image of an index to load
                          when `platform` is null
    }
    The layout's `latest` (or only) entry is an image manifest, or an index holding an image
    for the platform (same os and architecture; the same variant, else one without a variant).
    outputs: exactly one file, the tarball: `manifest.json` ([{Config, RepoTags, Layers}]) and
    `blobs/sha256/<hex>`, entries sorted with mtime 0. gzip layers are stored as they are; zstd
    layers are stored decompressed (named by their diff_id) so that docker and podman load them.
    """
    params = params_dict(call, {"repo_tags", "image", "platform", "host_platform"}, "oci_load")
    tags = params.get("repo_tags") or []
    if not isinstance(tags, list):
        raise UserInputError("oci_load: repo_tags must be a list of strings")
    if params.get("image") is not None:
        image, root = params["image"], input_path(call, params["image"], "oci_load: image")
    else:
        image, root = only_input(call, "oci_load")
    if len(call.outputs) != 1:
        raise UserInputError(f"oci_load: expected one output, got {sorted(call.outputs)}")
    (out_path,) = call.outputs.values()
    layout = Layout(root, what=f"oci_load: image {image}", lazy=call.lazy_blobs)
    manifest = _image(layout, params.get("platform"), params.get("host_platform"))
    with open(Path(out_path), "wb") as out:
        write_docker_archive(out, layout, manifest, tags, check_cancelled=call.check_cancelled)


def _image(layout: Layout, asked: str | None, host: str | None) -> Descriptor:
    """The manifest to load: the layout's image, or its index's image for the platform."""
    root = layout.resolve("latest")
    if root.media_type in mt.MANIFESTS:
        if asked:  # a single image is loaded as it is, but not silently as another platform
            want = parse_platform(asked, "oci_load: platform")
            cfg = layout.manifest(root).config
            have = config_platform(load_json(layout.read_blob(cfg), f"{layout.what}: config"))
            if match_platform([root.with_platform(have)], want) is None:
                raise UserInputError(
                    f"oci_load: platform is {want}, but the image {root.digest} is for {have}"
                )
        return root
    if root.media_type not in mt.INDEXES or not (asked or host):
        return root  # write_docker_archive says what is wrong with it
    want = parse_platform(asked or host or "", "oci_load: platform")
    images = [d for d in layout.image_index(root).manifests if d.media_type in mt.MANIFESTS]
    chosen = match_platform(images, want)
    if chosen is None:
        offered = sorted(str(d.platform) for d in images if d.platform is not None)
        whose = "" if asked else " (this machine's platform)"
        fits = [d for d in images if d.platform and match_platform([d], want) is not None]
        problem = "more than one image" if len(fits) > 1 else "no image"
        raise UserInputError(
            f"oci_load: index {root.digest} has {problem} for {want}{whose}; it has "
            f"{', '.join(offered) or 'no image with a platform'}: set the oci_load's `platform` "
            "attribute to the one to load"
        )
    return chosen
