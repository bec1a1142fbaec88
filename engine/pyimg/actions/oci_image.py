"""The `oci_image` builtin: an image (config, manifest, layout) from a base and layer blobs."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from pyimg.actions._common import (
    input_path,
    opt_str,
    opt_str_list,
    output_dir,
    output_with_suffix,
    params_dict,
    str_dict,
    write_digest_file,
)
from pyimg.actions.builtins import builtin
from pyimg.core.builtin import BuiltinCall
from pyimg.core.digest import canonical_json
from pyimg.errors import IntegrityError, UserInputError
from pyimg.oci import media_types as mt
from pyimg.oci.config import (
    DEFAULT_CREATED,
    ConfigChanges,
    apply_config,
    config_platform,
    layer_diff_ids,
)
from pyimg.oci.layer import Layer
from pyimg.oci.layout import REF_NAME, Layout, LayoutWriter
from pyimg.oci.model import Descriptor, Manifest, Platform, load_json
from pyimg.oci.platforms import check_platform, match_platform, platforms_agree

__all__ = ["oci_image", "select_platform"]

_PARAMS = {
    "base",
    "layers",
    "blobs",
    "config",
    "annotations",
    "os",
    "architecture",
    "variant",
    "created",
    "base_platform",
}
_CONFIG = {
    "entrypoint",
    "cmd",
    "env",
    "workdir",
    "user",
    "exposed_ports",
    "volumes",
    "labels",
    "stop_signal",
}


def select_platform(
    layout: Layout, root: Descriptor, os_: str | None, arch: str | None, variant: str | None
) -> Descriptor:
    """The image manifest for a platform: `root` itself, or the matching entry of an index.

    An index with a single image entry needs no platform; otherwise os/architecture (default
    linux/amd64) and, if given, variant must match exactly one entry.
    """
    if root.media_type in mt.MANIFESTS:
        return root
    if root.media_type not in mt.INDEXES:
        raise UserInputError(f"{layout.what}: {root.digest} has media type {root.media_type!r}")
    images = [d for d in layout.image_index(root).manifests if d.media_type in mt.MANIFESTS]
    if len(images) == 1 and not (os_ or arch):
        return images[0]
    want_os, want_arch = os_ or "linux", arch or "amd64"
    matches = [
        d
        for d in images
        if d.platform is not None
        and d.platform.os == want_os
        and d.platform.architecture == want_arch
        and (variant is None or d.platform.variant == variant)
    ]
    if not matches and variant is not None:
        # An entry without a variant, or arm64 written without its v8: as containerd chooses.
        fit = match_platform(images, Platform(want_os, want_arch, variant))
        matches = [fit] if fit is not None else []
    if len(matches) != 1:
        have = sorted(str(d.platform) for d in images if d.platform is not None)
        want = "/".join(p for p in (want_os, want_arch, variant) if p)
        raise UserInputError(
            f"{layout.what}: index {root.digest} has {len(matches)} images for {want} "
            f"(it has {have})"
        )
    return matches[0]


def _base_platform_mismatch(
    base_cfg: dict[str, Any], changes: ConfigChanges
) -> tuple[Platform, Platform] | None:
    """(the image's platform, its base's) when the image names a platform its base is not of."""
    if not (changes.os or changes.architecture):
        return None  # the base's platform is the image's
    try:
        have = config_platform(base_cfg)
    except (UserInputError, ValueError, TypeError):
        return None  # a base config without a platform: nothing to disagree with
    if not have.os or not have.architecture:
        return None
    want = Platform(changes.os or have.os, changes.architecture or have.architecture,
                    changes.variant)
    return None if platforms_agree(want, have) else (want, have)


def _check_base_platform(
    base_cfg: dict[str, Any], changes: ConfigChanges, base: str, must_match: bool,
    warn: Callable[[str], None],
) -> None:
    """An image built for a platform must be of its base's platform: binaries of one
    architecture do not run on another's base (docs/concepts.md, "Platforms"). In a plain build
    `architecture` may still relabel an image on any base, as it always could (the bundled
    example does), but not silently: a warning names both."""
    mismatch = _base_platform_mismatch(base_cfg, changes)
    if mismatch is None:
        return
    want, have = mismatch
    if must_match:
        raise UserInputError(
            f"oci_image: the image is for platform {want} but its base ({base}) is for "
            f"platform {have}: build the base for {want} (or pick its index entry), or set the "
            f"image's platform to {have}"
        )
    warn(
        f"the image says platform {want} but its base ({base}) is for platform {have}: it is "
        f"labelled {want} over {have} binaries (build it with --platforms {want} and a base of "
        f"that platform, or leave its architecture unset)"
    )


def _changes(params: Mapping[str, Any]) -> ConfigChanges:
    cfg = params.get("config") or {}
    if not isinstance(cfg, Mapping):
        raise UserInputError("oci_image: config must be an object")
    unknown = sorted(set(cfg) - _CONFIG)
    if unknown:
        raise UserInputError(f"oci_image: unknown config keys {unknown} (known: {sorted(_CONFIG)})")
    entrypoint = opt_str_list(cfg, "entrypoint", "oci_image: config")
    cmd = opt_str_list(cfg, "cmd", "oci_image: config")
    ports = cfg.get("exposed_ports") or []
    if not isinstance(ports, list) or not all(isinstance(p, str | int) for p in ports):
        raise UserInputError(f"oci_image: config.exposed_ports must be a list, got {ports!r}")
    check_platform(params.get("os"), params.get("architecture"), params.get("variant"), "oci_image")
    created = params.get("created") or DEFAULT_CREATED
    if not isinstance(created, str):
        raise UserInputError(f"oci_image: created must be an RFC 3339 string, got {created!r}")
    return ConfigChanges(
        entrypoint=tuple(entrypoint) if entrypoint is not None else None,
        cmd=tuple(cmd) if cmd is not None else None,
        env=tuple(sorted(str_dict(cfg, "env", "oci_image: config").items())),
        workdir=opt_str(cfg, "workdir", "oci_image: config"),
        user=opt_str(cfg, "user", "oci_image: config"),
        exposed_ports=tuple(str(p) for p in ports),
        volumes=tuple(opt_str_list(cfg, "volumes", "oci_image: config") or ()),
        labels=tuple(sorted(str_dict(cfg, "labels", "oci_image: config").items())),
        stop_signal=opt_str(cfg, "stop_signal", "oci_image: config"),
        os=opt_str(params, "os", "oci_image"),
        architecture=opt_str(params, "architecture", "oci_image"),
        variant=opt_str(params, "variant", "oci_image"),
        created=created,
    )


@builtin("oci_image")
def oci_image(call: BuiltinCall) -> None:
    """Build an image from an optional base plus layers; write it as an OCI layout.

    params (JSON object):
      base: EXEC_PATH | null   a declared input directory holding an OCI layout (its `latest`
                               entry, or its only entry). If that is an index, the image for
                               os/architecture/variant below (default linux/amd64) is used.
                               null = scratch. Base layers are reused byte for byte (hard links);
                               a lazy base layer (call.lazy_blobs) is referenced, not copied.
      layers: [EXEC_PATH]      descriptor JSON files written by `oci_layer`, in layer order
      blobs: [EXEC_PATH]       the matching blob files, same order and length as `layers`
      config: {                every key optional; null/absent keeps the base's value
        entrypoint: [str] | null   setting it without `cmd` clears the base's Cmd (Docker's rule)
        cmd: [str] | null
        env: {str: str}        `$VAR` / `${VAR}` expand from the base's env (unknown → "",
                               `$$` → `$`); existing variables keep their position, new ones
                               are appended sorted by name
        workdir: str | null
        user: str | null
        exposed_ports: [str]   "8080", "8080/tcp", "53/udp"; merged into the base's
        volumes: [str]         merged into the base's
        labels: {str: str}     merged into the base's
        stop_signal: str | null
      }
      annotations: {str: str}  manifest annotations
      os, architecture, variant: str | null   default: the base's, else linux / amd64
      base_platform: "must_match" | absent   the base must be of the image's platform (set
                               for an image built for a requested platform; absent, as in a
                               plain build, `architecture` relabels an image on any base, with
                               a warning naming both platforms)
      created: str             RFC 3339, default "1970-01-01T00:00:00Z"; config `created` and
                               the history entry of each new layer carry it

    outputs: one directory (in output_dirs): an OCI layout (sparse when the base's layers are
    lazy) whose index.json has one entry, the
    manifest, annotated org.opencontainers.image.ref.name=latest; and one file ending in
    ".digest": `sha256:<manifest hex>` (no newline).
    """
    params = params_dict(call, _PARAMS, "oci_image")
    changes = _changes(params)
    layer_paths = params.get("layers") or []
    blob_paths = params.get("blobs") or []
    if not isinstance(layer_paths, list) or not isinstance(blob_paths, list):
        raise UserInputError("oci_image: layers and blobs must be lists of exec paths")
    if len(layer_paths) != len(blob_paths):
        raise UserInputError(
            f"oci_image: {len(layer_paths)} layers but {len(blob_paths)} blobs (they pair up)"
        )
    annotations = str_dict(params, "annotations", "oci_image")
    out = output_dir(call, "oci_image")
    digest_out = output_with_suffix(call, ".digest", "oci_image")
    writer = LayoutWriter(out)

    base_cfg: dict[str, Any] | None = None
    layers: list[Descriptor] = []
    base = params.get("base")
    if base is not None:
        layout = Layout(
            input_path(call, base, "oci_image: base"),
            what=f"oci_image: base {base}",
            lazy=call.lazy_blobs,
        )
        image = select_platform(
            layout, layout.resolve("latest"), changes.os, changes.architecture, changes.variant
        )
        m = layout.manifest(image)
        base_cfg = load_json(layout.read_blob(m.config), f"{layout.what}: config")
        layer_diff_ids(base_cfg, m, f"{layout.what}: manifest {image.digest}")
        _check_base_platform(
            base_cfg, changes, base, params.get("base_platform") == "must_match", call.warn
        )
        for desc in m.layers:
            call.check_cancelled()
            layers.append(desc.with_media_type(mt.TO_OCI.get(desc.media_type, desc.media_type)))
            if layout.is_lazy(desc.digest):
                continue  # a pulled base's layer: reused by digest, fetched when bytes are needed
            path = layout.blob_path(desc.digest)
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                raise UserInputError(
                    f"{layout.what}: layer blob {desc.digest} is missing"
                ) from None
            if size != desc.size:
                raise IntegrityError(
                    f"{layout.what}: layer blob {desc.digest} has {size} bytes, its descriptor "
                    f"says {desc.size}"
                )
            writer.add_file(desc.digest, path, link=call.may_link(base))

    new: list[Layer] = []
    for i, (desc_path, blob_path) in enumerate(zip(layer_paths, blob_paths, strict=True)):
        call.check_cancelled()
        what = f"oci_image: layers[{i}] ({desc_path})"
        data = input_path(call, desc_path, what).read_bytes()
        layer = Layer.from_json(load_json(data, what), what)
        if layer.descriptor.media_type not in mt.LAYERS:
            raise UserInputError(f"{what}: not a layer media type: {layer.descriptor.media_type}")
        blob = input_path(call, blob_path, f"oci_image: blobs[{i}]")
        size = os.stat(blob).st_size
        known = call.input_digests.get(blob_path)
        if size != layer.descriptor.size or (
            known is not None and known != layer.descriptor.digest
        ):
            raise IntegrityError(
                f"oci_image: blobs[{i}] ({blob_path}) is {known or '?'} ({size} bytes) but "
                f"{desc_path} describes {layer.descriptor.digest} ({layer.descriptor.size} bytes)"
            )
        writer.add_file(layer.descriptor.digest, blob, link=call.may_link(blob_path))
        new.append(layer)
        layers.append(layer.descriptor)

    cfg = apply_config(base_cfg, changes, [layer.diff_id for layer in new])
    cfg_bytes = canonical_json(cfg)
    cfg_digest = writer.add_bytes(cfg_bytes)
    manifest = Manifest(
        config=Descriptor(mt.OCI_CONFIG, cfg_digest, len(cfg_bytes)),
        layers=tuple(layers),
        annotations=tuple(sorted(annotations.items())),
    )
    manifest_bytes = manifest.to_bytes()
    manifest_digest = writer.add_bytes(manifest_bytes)
    writer.finish(
        [Descriptor(mt.OCI_MANIFEST, manifest_digest, len(manifest_bytes), ((REF_NAME, "latest"),))]
    )
    assert digest_out is not None
    write_digest_file(digest_out, manifest_digest)
