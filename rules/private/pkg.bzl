"""pkg_tar: one canonical layer tarball, with rules_pkg's attributes."""

load("@pyimg//rules:providers.bzl", "OciLayerInfo")

def parse_mode(what, value):
    """An octal mode string ("0755") as an int, or fail() naming the attribute."""
    if type(value) != "string" or not value or len([c for c in value.elems() if c not in "01234567"]) > 0:
        fail("attribute '%s' must be an octal string like \"0644\", got %r" % (what, value))
    mode = int(value, 8)
    if mode > 0o7777:
        fail("attribute '%s': mode %s is out of range" % (what, value))
    return mode

def _clean(path):
    parts = [p for p in path.split("/") if p and p != "."]
    for p in parts:
        if p == "..":
            fail("path '%s' escapes the layer ('..' is not allowed)" % path)
    return "/".join(parts)

def _dest(ctx, f):
    """Where a source file lands in the layer (rules_pkg semantics of strip_prefix)."""
    strip = ctx.attr.strip_prefix
    short = f.short_path
    # Files of an external repository are at external/<repo>/...: paths are relative to its root.
    own = "external/%s/" % ctx.label.workspace_name
    if ctx.label.workspace_name and short.startswith(own):
        short = short[len(own):]
    if strip == "":
        rel = f.basename
    else:
        if strip == ".":
            prefix = ctx.label.package
        elif strip.startswith("/"):
            prefix = strip[1:]
        else:
            prefix = ctx.label.package + "/" + strip if ctx.label.package else strip
        prefix = _clean(prefix)
        if prefix == "":
            rel = short
        elif short.startswith(prefix + "/"):
            rel = short[len(prefix) + 1:]
        else:
            fail("attribute 'strip_prefix': file '%s' is not under '%s'" % (short, prefix))
    return _clean(ctx.attr.package_dir + "/" + rel)

def _pkg_tar_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name + ".tar")
    entries = {}
    inputs = []

    def add(path, entry, what):
        if path == "":
            fail("attribute '%s': a file would land at the layer root '/'" % what)
        if path in entries:
            fail("attribute '%s': two files map to the same path '%s' in the layer" % (what, path))
        entries[path] = entry

    for f in ctx.files.srcs:
        add(_dest(ctx, f), {"src": f.path}, "srcs")
        inputs.append(f)
    for target, path in ctx.attr.files.items():
        files = target[DefaultInfo].files
        if len(files) != 1:
            fail("attribute 'files': %s provides %d files; map exactly one file per label" % (target.label, len(files)))
        dest = _clean(path)
        add(dest, {"src": files[0].path}, "files")
        inputs.append(files[0])
    for path, target in ctx.attr.symlinks.items():
        if target == "":
            fail("attribute 'symlinks': the target of '%s' is empty" % path)
        add(_clean(path), {"type": "symlink", "target": target}, "symlinks")
    for d in ctx.attr.empty_dirs:
        add(_clean(ctx.attr.package_dir + "/" + d), {"type": "dir"}, "empty_dirs")
    modes = {}
    for path, mode in ctx.attr.modes.items():
        p = _clean(path)
        if p not in entries:
            fail("attribute 'modes': '%s' is not a path in this layer" % path)
        modes[p] = parse_mode("modes", mode)
    owner = ctx.attr.owner
    parts = owner.split(".")
    if len(parts) != 2 or not parts[0].isdigit() or not parts[1].isdigit():
        fail("attribute 'owner' must be \"uid.gid\" with numbers, got %r" % owner)
    deps = []
    for t in ctx.attr.deps:
        if OciLayerInfo in t:
            deps.append(t[OciLayerInfo].tar)
        else:
            deps.extend(t[DefaultInfo].files)
    inputs.extend(deps)
    params = {
        "entries": [dict(path = p, **entries[p]) for p in sorted(entries.keys())],
        "modes": modes,
        "mode": parse_mode("mode", ctx.attr.mode) if ctx.attr.mode else None,
        "owner": owner,
        "mtime": ctx.attr.mtime,
        "deps": [d.path for d in deps],
        "remove": [_clean(r) for r in ctx.attr.remove if not r.endswith("/")],
        "opaque_dirs": [_clean(r) for r in ctx.attr.remove if r.endswith("/")],
    }
    if deps and _clean(ctx.attr.package_dir):
        # As rules_pkg does: the merged tars' entries land under package_dir too. Only set when
        # used, so that the key of every other pkg_tar stays as it was.
        params["deps_dir"] = _clean(ctx.attr.package_dir)
    ctx.actions.builtin(
        kind = "pkg_tar",
        params = params,
        inputs = inputs,
        outputs = [out],
        mnemonic = "PkgTar",
        progress_message = "Writing layer " + out.short_path,
    )
    # oci_image streams the same tar from `spec` into its compressor, so an image never writes
    # (or stores) the uncompressed tar; `out` is made only when someone asks for this target.
    # The spec travels as JSON text: no dependent ever looks inside, and a string is cheap to pass
    # on (a pkg_tar of a big tree has one entry per file).
    info = OciLayerInfo(tar = out, spec = json.encode(params), inputs = inputs)
    return [DefaultInfo(files = [out]), info]

pkg_tar = rule(
    implementation = _pkg_tar_impl,
    doc = "One canonical layer tarball: sorted entries, fixed owner and mtime, normalized modes.",
    attrs = {
        "srcs": attr.label_list(allow_files = True, doc = "Files to put in the layer (placed by `package_dir` and `strip_prefix`)."),
        "package_dir": attr.string(doc = "Directory in the layer that receives `srcs`, `empty_dirs` and the entries of `deps` (as in rules_pkg), e.g. `/app`. Not `files`, `symlinks`, `modes` or `remove`: their paths are full layer paths."),
        "strip_prefix": attr.string(doc = "Empty: files land by basename. `.`: paths relative to the package are kept. `/x`: relative to workspace dir x. `x`: relative to the package's subdirectory x."),
        "files": attr.label_keyed_string_dict(allow_files = True, doc = "Exact placement: label -> path in the layer."),
        "symlinks": attr.string_dict(doc = "Symbolic links: path in the layer -> link target."),
        "empty_dirs": attr.string_list(doc = "Empty directories to create (under `package_dir`)."),
        "mode": attr.string(doc = "Mode of every file, octal (`0644`). Default: 0755 for executables, 0644 otherwise."),
        "modes": attr.string_dict(doc = "Per-path modes, octal: path in the layer -> mode."),
        "owner": attr.string(default = "0.0", doc = "Owner of every entry, `uid.gid`."),
        "mtime": attr.int(default = 0, doc = "The modification time of every entry (seconds since the epoch)."),
        "deps": attr.label_list(allow_files = True, doc = "Other tarballs whose entries are merged into this one."),
        "remove": attr.string_list(doc = "Paths to delete from lower layers: written as whiteouts (`.wh.NAME`); a path ending in `/` clears the directory (opaque whiteout)."),
    },
)
