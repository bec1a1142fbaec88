"""oci_sbom: the SBOM of an image as a build output (SPDX 2.3 JSON, docs/supply-chain.md)."""

load("@pyimg//rules:providers.bzl", "OciImageInfo")

def _oci_sbom_impl(ctx):
    if OciImageInfo not in ctx.attr.image:
        fail("attribute 'image': %s is not an image (oci_image, oci_layout or oci_pull)" % ctx.attr.image.label)
    info = ctx.attr.image[OciImageInfo]
    out = ctx.actions.declare_file(ctx.label.name + ".spdx.json")
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
        },
        inputs = inputs,
        outputs = [out],
        mnemonic = "OciSbom",
        progress_message = "Writing the SBOM of %s" % ctx.attr.image.label,
    )
    return [DefaultInfo(files = [out])]

oci_sbom = rule(
    implementation = _oci_sbom_impl,
    doc = "The SBOM of an image, SPDX 2.3 JSON (`NAME.spdx.json`): its layers, every file with sha256, mode and owner, and the packages of the `.deb` files, pulled bases and external files each layer was made from. `pyimg sbom LABEL` writes the same document, with download URLs that only the lock knows (docs/supply-chain.md).",
    attrs = {
        "image": attr.label(mandatory = True, doc = "The image: an `oci_image`, `oci_layout` or `oci_pull`."),
        "source_date_epoch": attr.int(default = 0, doc = "The document's time when the image config has no `created` (seconds since the epoch)."),
    },
)
