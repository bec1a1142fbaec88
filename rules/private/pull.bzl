"""The targets of an `oci_pull` repository: a pulled image, pinned by digest, as `OciImageInfo`."""

load("@pyimg//rules:providers.bzl", "OciImageInfo")

def _oci_pulled_image_impl(ctx):
    layout = ctx.actions.declare_directory(ctx.label.name)
    digest_file = ctx.actions.declare_file(ctx.label.name + ".digest")
    # The repository's files live at external/<repo>/ (see pyimg.cli.repositories).
    path = "external/%s/layout" % ctx.label.workspace_name
    ctx.actions.builtin(
        kind = "oci_layout_import",
        params = {"path": path, "digest": ctx.attr.digest},
        inputs = ctx.files.srcs,
        outputs = [layout, digest_file],
        mnemonic = "OciPull",
        progress_message = "Importing %s@%s" % (ctx.attr.image, ctx.attr.digest[:19]),
    )
    pulled = {"image": ctx.attr.image, "digest": ctx.attr.digest}
    info = OciImageInfo(layout = layout, digest = digest_file, layers = [{"base": str(ctx.label), "pulled": pulled}])
    return [DefaultInfo(files = [layout, digest_file]), info]

oci_pulled_image = rule(
    implementation = _oci_pulled_image_impl,
    doc = "An image of an `oci_pull` repository (generated; not for BUILD files).",
    attrs = {
        "digest": attr.string(mandatory = True, doc = "The image manifest digest."),
        "image": attr.string(doc = "The registry image it came from (for messages)."),
        "srcs": attr.label_list(allow_files = True, doc = "The layout's files."),
    },
)
