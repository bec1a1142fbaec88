"""deb_layer: one canonical layer from a set of Debian packages (`.deb` files)."""

load("@pyimg//rules:providers.bzl", "OciLayerInfo")

# Debian's architecture names and the OCI (architecture, variant) each is, for the names a
# `.deb` file carries (`NAME_VERSION_ARCH.deb`, as deb_index and the archive name them).
_DEBIAN_ARCHITECTURES = {
    "amd64": ("amd64", ""),
    "arm64": ("arm64", ""),
    "armhf": ("arm", "v7"),
    "armel": ("arm", "v5"),
    "i386": ("386", ""),
    "ppc64el": ("ppc64le", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
    "mips64el": ("mips64le", ""),
    "loong64": ("loong64", ""),
}

def deb_architectures(debs):
    """{Debian architecture: the first `.deb` of it} of the packages whose file name says one;
    `Architecture: all` packages fit any platform and are left out."""
    found = {}
    for f in debs:
        parts = f.basename[:-len(".deb")].split("_") if f.basename.endswith(".deb") else []
        if len(parts) == 3 and parts[2] in _DEBIAN_ARCHITECTURES and parts[2] not in found:
            found[parts[2]] = f
    return found

def deb_platform_problem(debs, platform, what = "the platform is"):
    """Why packages of `debs` do not run on `platform` (`os/architecture[/variant]`), naming the
    package and the platform (after `what`); None when they all do."""
    parts = platform.split("/")
    want_arch, want_variant = parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else ""
    for deb_arch, f in deb_architectures(debs).items():
        arch, variant = _DEBIAN_ARCHITECTURES[deb_arch]
        if arch != want_arch or (variant and want_variant and variant != want_variant):
            return "%s is a package of Debian architecture %s (%s) but %s %s: use the packages of %s (e.g. select() on the platform)" % (
                f.short_path,
                deb_arch,
                "/".join([p for p in ["linux", arch, variant] if p]),
                what,
                platform,
                want_arch,
            )
    return None

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
    if ctx.fragments.platform.platform_requested:
        # The builtin checks each package's own `Architecture` field against it (a file name
        # may lie); in the default configuration the image says which platform it is.
        params["platform"] = ctx.fragments.platform.platform
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
    fragments = ["platform"],
    doc = "One canonical layer of Debian packages: the data of every `.deb` (modes, owners and links as the package says), a dpkg status record per package, optional users and groups. No maintainer script runs (see docs/debian.md).",
    attrs = {
        "debs": attr.label_list(allow_files = True, mandatory = True, doc = "The `.deb` files of one architecture, e.g. `@debian//amd64:packages`. A path two packages ship with different content is an error naming both. Packages of two architectures, or, built for a platform, of another architecture than the platform's, are an error naming the package and both (read from each package's control `Architecture` field, not its file name; `all` fits any)."),
        "users": attr.string_dict(doc = "Accounts for /etc/passwd: name -> `\"UID\"` or `\"UID:GID\"` (GID defaults to UID). root is always present; each user gets /home/NAME and the shell /sbin/nologin."),
        "groups": attr.string_dict(doc = "Groups for /etc/group: name -> `\"GID\"`. A user's GID without a group gets a group named after the user."),
        "mtime": attr.int(default = 0, doc = "The modification time of every entry (seconds since the epoch)."),
    },
)
