"""npm packages: `npm_package` (the per-package targets of an `npm_lock` repository) and
`npm_layer`, node_modules as an npm lock lays it out, as one canonical layer."""

load("@pyimg//rules:providers.bzl", "OciLayerInfo")

NpmPackageInfo = provider(
    doc = "A direct dependency of an npm_lock's package.json with what it needs: the lock's layout and the tarballs of its transitive set.",
    fields = {
        "layout": "File: the npm_lock repository's layout.json.",
        "files": "list of File: layout.json and the tarballs of the transitive set.",
        "roots": "list of string: the lock paths the set starts from (\"node_modules/express\").",
    },
)

def _npm_package_impl(ctx):
    layouts = [f for f in ctx.files.srcs if f.basename == "layout.json"]
    return [
        DefaultInfo(files = ctx.files.srcs),
        NpmPackageInfo(layout = layouts[0], files = ctx.files.srcs, roots = ctx.attr.roots),
    ]

npm_package = rule(
    implementation = _npm_package_impl,
    doc = "A direct dependency of an `npm_lock` repository with its dependencies (generated; not for BUILD files).",
    attrs = {
        "srcs": attr.label_list(allow_files = True, doc = "layout.json and the tarballs of the transitive set."),
        "roots": attr.string_list(doc = "The lock paths of the packages the set starts from."),
    },
)

def _lock_files(ctx):
    """(layout.json, input files, roots or None) of `lock` or of `deps`."""
    if (len(ctx.attr.deps) > 0) == (ctx.attr.lock != None):
        fail("give one of 'lock' (the whole lock, \"@npm//:lock\") or 'deps' (packages with their dependencies, like [\"@npm//express\"])")
    if ctx.attr.lock != None:
        files = ctx.files.lock
        layouts = [f for f in files if f.basename == "layout.json"]
        if len(layouts) != 1:
            fail("attribute 'lock': expected an npm_lock repository's ':lock' target (e.g. \"@npm//:lock\"), which holds one layout.json; got %s" % [f.short_path for f in files])
        return layouts[0], files, None
    layout = None
    files = {}
    roots = {}
    for dep in ctx.attr.deps:
        if NpmPackageInfo not in dep:
            fail("attribute 'deps': %s is not an npm package (a target of an npm_lock repository, like \"@npm//express\")" % dep.label)
        info = dep[NpmPackageInfo]
        if layout != None and info.layout.path != layout.path:
            fail("attribute 'deps': %s is from another npm_lock than the other dependencies (one layer lays out one lock)" % dep.label)
        layout = info.layout
        for f in info.files:
            files[f.path] = f
        for r in info.roots:
            roots[r] = True
    return layout, [files[p] for p in sorted(files)], sorted(roots.keys())

def _npm_layer_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name + ".tar")
    layout, files, roots = _lock_files(ctx)
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
        "layout": layout.path,
        "path": ctx.attr.path,
        "platform": platform,
        "libc": ctx.attr.libc,
        "include_dev": ctx.attr.include_dev,
        "mtime": ctx.attr.mtime,
    }
    if roots != None:
        params["roots"] = roots
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
    doc = "One canonical layer of `node_modules` exactly as an `npm_lock`'s package-lock.json lays it out: nested paths, scoped packages, `.bin` links, os/cpu/libc filters for `platform`, dev packages left out by default; the whole lock (`lock`) or only some packages with their dependencies (`deps`). No install script runs (see docs/node.md).",
    attrs = {
        "lock": attr.label(allow_files = True, doc = "The `:lock` target of an `npm_lock` repository, e.g. `\"@npm//:lock\"`: every package of the lock (give this or `deps`)."),
        "deps": attr.label_list(doc = "Direct dependencies of the lock's package.json, e.g. `[\"@npm//express\"]` or `[\"@npm//@scope/name\"]`: only they and what they need, each at its place in the lock's tree, dev dependencies too when listed (give this or `lock`)."),
        "path": attr.string(default = "/app/node_modules", doc = "Where `node_modules` goes in the image (absolute)."),
        "platform": attr.string(default = "", doc = "The target platform, like `\"linux/arm64\"`, for packages' `os` and `cpu` (default: the platform the target is built for, `--platforms` or an index's `platforms`, else this machine's)."),
        "libc": attr.string(default = "glibc", doc = "The target's C library for packages' `libc` (`\"glibc\"` or `\"musl\"`, e.g. for Alpine)."),
        "include_dev": attr.bool(default = False, doc = "Also install the lock's dev packages (`npm ci` without `--omit=dev`)."),
        "mtime": attr.int(default = 0, doc = "The modification time of every entry (seconds since the epoch)."),
    },
)
