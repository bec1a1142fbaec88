"""deb_layer: one canonical layer from a set of Debian packages (`.deb` files)."""

load("@pyimg//rules:providers.bzl", "OciLayerInfo")

def _deb_layer_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name + ".tar")
    debs = ctx.files.debs
    for f in debs:
        if not f.basename.endswith(".deb"):
            fail("attribute 'debs': %s is not a .deb file" % f.short_path)
    for name, ids in ctx.attr.users.items():
        parts = ids.split(":")
        if len(parts) > 2 or len([p for p in parts if not p.isdigit()]) > 0:
            fail("attribute 'users': %r must map to \"UID\" or \"UID:GID\" (numbers), got %r" % (name, ids))
    for name, gid in ctx.attr.groups.items():
        if not gid.isdigit():
            fail("attribute 'groups': %r must map to a numeric GID, got %r" % (name, gid))
    params = {
        "debs": [f.path for f in debs],
        "mtime": ctx.attr.mtime,
        "users": ctx.attr.users,
        "groups": ctx.attr.groups,
    }
    ctx.actions.builtin(
        kind = "deb_layer",
        params = params,
        inputs = debs,
        outputs = [out],
        mnemonic = "DebLayer",
        progress_message = "Writing Debian layer " + out.short_path,
    )
    # As pkg_tar: oci_image streams the same tar from `spec` into its compressor.
    info = OciLayerInfo(tar = out, spec = json.encode(params), inputs = debs, writer = "deb_layer")
    return [DefaultInfo(files = [out]), info]

deb_layer = rule(
    implementation = _deb_layer_impl,
    doc = "One canonical layer of Debian packages: the data of every `.deb` (modes, owners and links as the package says), a dpkg status record per package, optional users and groups. No maintainer script runs (see docs/debian.md).",
    attrs = {
        "debs": attr.label_list(allow_files = True, mandatory = True, doc = "The `.deb` files of one architecture, e.g. `@debian//amd64:packages`. A path two packages ship with different content is an error naming both."),
        "users": attr.string_dict(doc = "Accounts for /etc/passwd: name -> `\"UID\"` or `\"UID:GID\"` (GID defaults to UID). root is always present; each user gets /home/NAME and the shell /sbin/nologin."),
        "groups": attr.string_dict(doc = "Groups for /etc/group: name -> `\"GID\"`. A user's GID without a group gets a group named after the user."),
        "mtime": attr.int(default = 0, doc = "The modification time of every entry (seconds since the epoch)."),
    },
)
