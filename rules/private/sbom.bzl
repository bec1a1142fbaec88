"""oci_sbom: the SBOM of an image as a build output (SPDX 2.3 JSON, docs/supply-chain.md)."""

load("@pyimg//rules:providers.bzl", "OciImageInfo")

_FORMATS = {"spdx-json": ".spdx.json", "cyclonedx-json": ".cdx.json"}

def _oci_sbom_impl(ctx):
    if OciImageInfo not in ctx.attr.image:
        fail("attribute 'image': %s is not an image (oci_image, oci_layout or oci_pull)" % ctx.attr.image.label)
    info = ctx.attr.image[OciImageInfo]
    if ctx.attr.format not in _FORMATS:
        fail("attribute 'format' must be one of %s, got %r" % (_FORMATS.keys(), ctx.attr.format))
    out = ctx.actions.declare_file(ctx.label.name + _FORMATS[ctx.attr.format])
    layers = info.layers or [{"base": str(ctx.attr.image.label)}]
    inputs = [info.layout]
    for layer in layers:
        inputs.extend(layer.get("files", []))
    ctx.actions.builtin(
        kind = "oci_sbom",
        params = {
            "image": str(ctx.attr.image.label),
            "layout": info.layout.path,
            # Per layer: the target that made it and the paths of the .deb and external files
            # it was made from (the Files themselves are inputs).
            "layers": [
                {k: ([f.path for f in v] if k == "files" else v) for k, v in layer.items()}
                for layer in layers
            ],
            "source_date_epoch": ctx.attr.source_date_epoch,
            "format": ctx.attr.format,
        },
        inputs = inputs,
        outputs = [out],
        mnemonic = "OciSbom",
        progress_message = "Writing the SBOM of %s" % ctx.attr.image.label,
    )
    return [DefaultInfo(files = [out])]

oci_sbom = rule(
    implementation = _oci_sbom_impl,
    doc = "The SBOM of an image, SPDX 2.3 JSON (`NAME.spdx.json`) or CycloneDX 1.5: its layers, every file with sha256, mode and owner, and the packages each layer was made from: `.deb` files, pulled bases, the wheels a `py_layer` and the npm packages an `npm_layer` installed (each with the files it installed), external files. `pyimg sbom LABEL` writes the same document, with download URLs that only the lock knows (docs/supply-chain.md).",
    attrs = {
        "image": attr.label(mandatory = True, doc = "The image: an `oci_image`, `oci_layout` or `oci_pull`."),
        "format": attr.string(default = "spdx-json", values = ["spdx-json", "cyclonedx-json"], doc = "`spdx-json` (SPDX 2.3, `NAME.spdx.json`) or `cyclonedx-json` (CycloneDX 1.5, `NAME.cdx.json`)."),
        "source_date_epoch": attr.int(default = 0, doc = "The document's time when the image config has no `created` (seconds since the epoch)."),
    },
)
