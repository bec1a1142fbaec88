"""The `oci_load` builtin: a `docker load` / `podman load` tarball from an image layout."""

from __future__ import annotations

from pathlib import Path

from pyimg.actions._common import input_path, only_input, params_dict
from pyimg.actions.builtins import builtin
from pyimg.core.builtin import BuiltinCall
from pyimg.errors import UserInputError
from pyimg.oci.docker_archive import write_docker_archive
from pyimg.oci.layout import Layout

__all__ = ["oci_load"]


@builtin("oci_load")
def oci_load(call: BuiltinCall) -> None:
    """Write a docker-archive tarball of one image.

    params: {
      repo_tags: [str]    full references, e.g. ["example.com/app:1.0"]; each needs a tag
      image: EXEC_PATH    optional: the input directory holding the image's OCI layout; may be
                          omitted when that directory is the only input
    }
    The layout's `latest` (or only) entry must be an image manifest (not an index).
    outputs: exactly one file, the tarball: `manifest.json` ([{Config, RepoTags, Layers}]) and
    `blobs/sha256/<hex>`, entries sorted with mtime 0. gzip layers are stored as they are; zstd
    layers are stored decompressed (named by their diff_id) so that docker and podman load them.
    """
    params = params_dict(call, {"repo_tags", "image"}, "oci_load")
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
    with open(Path(out_path), "wb") as out:
        write_docker_archive(
            out, layout, layout.resolve("latest"), tags, check_cancelled=call.check_cancelled
        )
