"""Python packages: `py_package` (the targets of a `pip_lock` repository) and `py_layer`, one
canonical layer of installed wheels."""

load("@pyimg//rules:providers.bzl", "OciLayerInfo")

PyPackageInfo = provider(
    doc = "The wheels of a package and its transitive dependencies, per target platform.",
    fields = {
        "wheels": "dict: platform (\"linux/amd64\") -> list of File, the wheels to install there.",
        "python_version": "The target's Python version the wheels were chosen for (\"3.11\").",
    },
)

def _py_package_impl(ctx):
    by_name = {f.basename: f for f in ctx.files.srcs}
    wheels = {}
    for platform, names in ctx.attr.closure.items():
        wheels[platform] = [by_name[n] for n in names.split(" ") if n]
    return [
        DefaultInfo(files = ctx.files.srcs),
        PyPackageInfo(wheels = wheels, python_version = ctx.attr.python_version),
    ]

py_package = rule(
    implementation = _py_package_impl,
    doc = "A package of a `pip_lock` repository with its dependencies (generated; not for BUILD files).",
    attrs = {
        "srcs": attr.label_list(allow_files = True, doc = "Every wheel of the set, on any platform."),
        "closure": attr.string_dict(doc = "Platform -> the file names of its wheels, space-separated."),
        "python_version": attr.string(doc = "The target's Python version."),
    },
)

def _py_layer_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name + ".tar")
    # The attribute, else the configuration's platform (`--platforms`, an oci_image_index's
    # `platforms`; this machine's in the default configuration).
    platform = ctx.attr.platform or ctx.fragments.platform.platform
    platform = "/".join(platform.split("/")[:2])
    wheels = {}
    version = None
    for dep in ctx.attr.deps:
        if PyPackageInfo not in dep:
            fail("attribute 'deps': %s is not a Python package (a target of a pip_lock repository, like \"@pypi//flask\")" % dep.label)
        info = dep[PyPackageInfo]
        if platform not in info.wheels:
            fail("attribute 'deps': %s has no wheels for platform %s (its pip_lock has %s)" % (dep.label, platform, sorted(info.wheels.keys())))
        if version != None and info.python_version != version:
            fail("attribute 'deps': %s is for Python %s, another dependency for Python %s" % (dep.label, info.python_version, version))
        version = info.python_version
        for f in info.wheels[platform]:
            wheels[f.path] = f
    if not ctx.attr.prefix.startswith("/"):
        fail("attribute 'prefix' must be an absolute path in the image, got %r" % ctx.attr.prefix)
    site_packages = ctx.attr.site_packages or "%s/lib/python%s/site-packages" % (ctx.attr.prefix.rstrip("/"), version or "3")
    inputs = [wheels[p] for p in sorted(wheels)]
    params = {
        "wheels": sorted(wheels),
        "prefix": ctx.attr.prefix,
        "site_packages": site_packages,
        "python": ctx.attr.python,
        "python_version": version or "",
        "bytecode": ctx.attr.bytecode,
        "mtime": ctx.attr.mtime,
    }
    ctx.actions.builtin(
        kind = "py_layer",
        params = params,
        inputs = inputs,
        outputs = [out],
        mnemonic = "PyLayer",
        progress_message = "Installing Python packages " + out.short_path,
    )
    # As deb_layer: oci_image streams the same tar from `spec` into its compressor.
    info = OciLayerInfo(tar = out, spec = json.encode(params), inputs = inputs, writer = "py_layer")
    return [DefaultInfo(files = [out]), info]

py_layer = rule(
    implementation = _py_layer_impl,
    fragments = ["platform"],
    doc = "One canonical layer of Python packages installed from their wheels as pip would (RECORD, INSTALLER `pyimg`, console scripts, `.data` directories), with pypa's `installer`: no pip, nothing of the host. See docs/python.md.",
    attrs = {
        "deps": attr.label_list(mandatory = True, doc = "Packages of a `pip_lock` repository, e.g. `[\"@pypi//flask\"]` (each with its dependencies) or `[\"@pypi//:all\"]`."),
        "platform": attr.string(doc = "The platform whose wheels are installed, `linux/amd64` or `linux/arm64`; default: the platform it is built for (`pyimg build --platforms`, an `oci_image_index`'s `platforms`), else this machine's. A variant (`linux/arm64/v8`) is ignored."),
        "prefix": attr.string(default = "/usr/local", doc = "The installation prefix: console scripts go to PREFIX/bin, `.data/data` to PREFIX, headers to PREFIX/include/pythonX.Y/NAME."),
        "site_packages": attr.string(doc = "Where packages go; default PREFIX/lib/pythonX.Y/site-packages. For Debian's python3: `/usr/lib/python3/dist-packages`."),
        "python": attr.string(default = "/usr/local/bin/python3", doc = "The image's interpreter, written into console-script wrappers (`#!PYTHON`)."),
        "bytecode": attr.bool(default = False, doc = "Also write `.pyc` files: checked-hash, so reproducible. Needs pyimg to run on the same Python version as the image."),
        "mtime": attr.int(default = 0, doc = "The modification time of every entry (seconds since the epoch)."),
    },
)
