"""npm_layer: node_modules as an npm lock lays it out, as one canonical layer."""

load("@pyimg//rules:providers.bzl", "OciLayerInfo")

def _npm_layer_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name + ".tar")
    files = ctx.files.lock
    layouts = [f for f in files if f.basename == "layout.json"]
    if len(layouts) != 1:
        fail("attribute 'lock': expected an npm_lock repository's ':lock' target (e.g. \"@npm//:lock\"), which holds one layout.json; got %s" % [f.short_path for f in files])
    if not ctx.attr.path.startswith("/"):
        fail("attribute 'path': must be an absolute path in the image, like \"/app/node_modules\", got %r" % ctx.attr.path)
    if ".." in ctx.attr.path.split("/"):
        fail("attribute 'path': %r leaves the image root" % ctx.attr.path)
    if ctx.attr.libc not in ("glibc", "musl"):
        fail("attribute 'libc': must be \"glibc\" or \"musl\", got %r" % ctx.attr.libc)
    # The platform this target is built for (`--platforms`, an index's `platforms`), else the
    # default configuration's: this machine's.
    platform = ctx.attr.platform or ctx.fragments.platform.platform
    params = {
        "layout": layouts[0].path,
        "path": ctx.attr.path,
        "platform": platform,
        "libc": ctx.attr.libc,
        "include_dev": ctx.attr.include_dev,
        "mtime": ctx.attr.mtime,
    }
    ctx.actions.builtin(
        kind = "npm_layer",
        params = params,
        inputs = files,
        outputs = [out],
        mnemonic = "NpmLayer",
        progress_message = "Writing node_modules layer " + out.short_path,
    )
    # As pkg_tar: oci_image streams the same tar from `spec` into its compressor.
    info = OciLayerInfo(tar = out, spec = json.encode(params), inputs = files, writer = "npm_layer")
    return [DefaultInfo(files = [out]), info]

npm_layer = rule(
    implementation = _npm_layer_impl,
    fragments = ["platform"],
    doc = "One canonical layer of `node_modules` exactly as an `npm_lock`'s package-lock.json lays it out: nested paths, scoped packages, `.bin` links, os/cpu/libc filters for `platform`, dev packages left out by default. No install script runs (see docs/node.md).",
    attrs = {
        "lock": attr.label(mandatory = True, allow_files = True, doc = "The `:lock` target of an `npm_lock` repository, e.g. `\"@npm//:lock\"`."),
        "path": attr.string(default = "/app/node_modules", doc = "Where `node_modules` goes in the image (absolute)."),
        "platform": attr.string(default = "", doc = "The target platform, like `\"linux/arm64\"`, for packages' `os` and `cpu` (default: the platform the target is built for, `--platforms` or an index's `platforms`, else this machine's)."),
        "libc": attr.string(default = "glibc", doc = "The target's C library for packages' `libc` (`\"glibc\"` or `\"musl\"`, e.g. for Alpine)."),
        "include_dev": attr.bool(default = False, doc = "Also install the lock's dev packages (`npm ci` without `--omit=dev`)."),
        "mtime": attr.int(default = 0, doc = "The modification time of every entry (seconds since the epoch)."),
    },
)
