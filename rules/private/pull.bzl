"""The targets of an `oci_pull` repository: a pulled image, pinned by digest, as `OciImageInfo`."""

load("@pyimg//rules:providers.bzl", "OciImageInfo")

def _platform_parts(text):
    parts = text.split("/")
    return parts[0], parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else ""

def _pulled_digest(ctx):
    """The manifest to import: for a platform asked for, the pulled image of that platform (an
    entry without a variant, or the platform without one, fits, as containerd chooses)."""
    fragment = ctx.fragments.platform
    if not fragment.platform_requested or not ctx.attr.platforms:
        return ctx.attr.digest
    want_os, want_arch, want_variant = _platform_parts(fragment.platform)
    for text, digest in ctx.attr.platforms.items():
        os, arch, variant = _platform_parts(text)
        if os == want_os and arch == want_arch and (variant == want_variant or not variant or not want_variant):
            return digest
    pulled = sorted(ctx.attr.platforms.keys())
    has = [p for p in ctx.attr.available if _platform_parts(p)[:2] == (want_os, want_arch)]
    add = has[0] if has else fragment.platform
    fix = 'add it to the declaration: platforms = [%s], then build again' % ", ".join(['"%s"' % p for p in pulled + [add]])
    if not ctx.attr.available:
        fix = "it is pinned to a single image, not an index: pin an index that has %s (or an image of it)" % fragment.platform
    elif not has:
        fix = "its index has only %s: pin an image that has %s, or build for one of those" % (", ".join(ctx.attr.available), fragment.platform)
    fail("%s: oci_pull '%s' (%s) pulls no image for platform %s, only %s: %s" % (
        ctx.attr.origin or "MODULE.pyimg",
        ctx.label.workspace_name,
        ctx.attr.image,
        fragment.platform,
        ", ".join(pulled),
        fix,
    ))

def _oci_pulled_image_impl(ctx):
    layout = ctx.actions.declare_directory(ctx.label.name)
    digest_file = ctx.actions.declare_file(ctx.label.name + ".digest")
    # The repository's files live at external/<repo>/ (see pyimg.cli.repositories).
    path = "external/%s/layout" % ctx.label.workspace_name
    ctx.actions.builtin(
        kind = "oci_layout_import",
        params = {"path": path, "digest": _pulled_digest(ctx)},
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
    fragments = ["platform"],
    attrs = {
        "digest": attr.string(mandatory = True, doc = "The image manifest digest (of the first platform pulled from an index)."),
        "platforms": attr.string_dict(doc = "platform -> image manifest digest, for each platform pulled (of a single image, the platform its config says)."),
        "available": attr.string_list(doc = "Of an index: every platform it has (for messages); empty for a single image."),
        "origin": attr.string(doc = "MODULE.pyimg:LINE:COL of the oci_pull (for messages)."),
        "image": attr.string(doc = "The registry image it came from (for messages)."),
        "srcs": attr.label_list(allow_files = True, doc = "The layout's files."),
    },
)
