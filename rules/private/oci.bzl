"""The image rules: oci_image, oci_image_index, oci_layout, oci_load and oci_push."""

load("@pyimg//rules/private:deb.bzl", "deb_platform_problem")
load("@pyimg//rules:providers.bzl", "OciImageIndexInfo", "OciImageInfo", "OciLayerInfo", "OciPushInfo")

_COMPRESSIONS = ["gzip", "zstd"]

def _image_layout(target, what):
    if OciImageInfo in target:
        return target[OciImageInfo]
    fail("attribute '%s': %s is not an image (oci_image, oci_layout or oci_pull)" % (what, target.label))

def _oci_image_impl(ctx):
    layout = ctx.actions.declare_directory(ctx.label.name)
    digest = ctx.actions.declare_file(ctx.label.name + ".digest")
    inputs = []
    base = None
    made_by = []  # OciImageInfo.layers: what made each layer, for oci_sbom
    if ctx.attr.base:
        # An index as base: the builtin takes its entry for the image's platform.
        info = ctx.attr.base[OciImageIndexInfo] if OciImageIndexInfo in ctx.attr.base else _image_layout(ctx.attr.base, "base")
        base_layers = info.layers if OciImageInfo in ctx.attr.base else None
        made_by.extend(base_layers or [{"base": str(ctx.attr.base.label)}])
        base = info.layout.path
        inputs.append(info.layout)
    if ctx.attr.compression not in _COMPRESSIONS:
        fail("attribute 'compression' must be one of %s, got %r" % (_COMPRESSIONS, ctx.attr.compression))
    layers = []
    blobs = []
    sources = []  # (params, inputs, tar, what) per layer
    for t in ctx.attr.tars:
        if OciLayerInfo in t and t[OciLayerInfo].spec != None:
            info = t[OciLayerInfo]
            params = {"compression": ctx.attr.compression, "tar_spec": json.decode(info.spec)}
            if info.writer != None:
                # Only set for other writers than pkg_tar, so that pkg_tar layers keep their keys.
                params["tar_writer"] = info.writer
            sources.append((params, info.inputs, info.tar, info.tar.short_path))
            made = {"target": str(t.label), "files": _package_files(info.inputs)}
            if info.writer in ("py_layer", "npm_layer"):
                # Which wheels or npm packages it installed, and where: the SBOM reads the
                # same params (actions/sbom.py).
                made["writer"] = info.writer
                made["spec"] = info.spec
            made_by.append(made)
        else:
            for tar in t[DefaultInfo].files:
                sources.append(({"compression": ctx.attr.compression}, [tar], tar, tar.short_path))
                made_by.append({"target": str(t.label), "files": _package_files([tar])})
    shared = {}  # tar path -> (desc, blob): a tar listed twice is one layer action
    for params, layer_inputs, tar, what in sources:
        n = len(layers)
        if not tar.is_source and tar.path in shared:
            desc, blob = shared[tar.path]
            layers.append(desc)
            blobs.append(blob)
            continue
        if tar.is_source:
            blob = ctx.actions.declare_file("%s.layers/%d.blob" % (ctx.label.name, n))
            desc = ctx.actions.declare_file("%s.layers/%d.json" % (ctx.label.name, n))
        else:
            # Beside the tar: every image that uses the layer (on every platform whose layer is
            # the same) shares this one action, so the layer is compressed once.
            blob = ctx.actions.declare_file("%s.layer/%s.blob" % (tar.basename, ctx.attr.compression), sibling = tar)
            desc = ctx.actions.declare_file("%s.layer/%s.json" % (tar.basename, ctx.attr.compression), sibling = tar)
        ctx.actions.builtin(
            kind = "oci_layer",
            params = params,
            inputs = layer_inputs,
            outputs = [blob, desc],
            mnemonic = "OciLayer",
            progress_message = "Writing layer %s (%s)" % (what, ctx.attr.compression),
        )
        layers.append(desc)
        blobs.append(blob)
        shared[tar.path] = (desc, blob)
    inputs.extend(layers)
    inputs.extend(blobs)
    # Empty attributes keep the base image's values (the builtin reads None as "unset").
    config = {
        "entrypoint": ctx.attr.entrypoint or None,
        "cmd": ctx.attr.cmd or None,
        "env": ctx.attr.env,
        "workdir": ctx.attr.workdir or None,
        "user": ctx.attr.user or None,
        "exposed_ports": ctx.attr.exposed_ports,
        "volumes": ctx.attr.volumes,
        "labels": ctx.attr.labels,
        "stop_signal": ctx.attr.stop_signal or None,
    }
    os, architecture, variant = _image_platform(ctx)
    if architecture:
        # Debian packages of another architecture than the image's: caught here, not when run.
        platform = "/".join([p for p in [os or "linux", architecture, variant] if p])
        for t in ctx.attr.tars:
            if OciLayerInfo in t and t[OciLayerInfo].writer == "deb_layer":
                problem = deb_platform_problem(t[OciLayerInfo].inputs, platform, "the image is for")
                if problem:
                    fail("attribute 'tars': %s: %s" % (t.label, problem))
    params = {
        "base": base,
        "layers": [d.path for d in layers],
        "blobs": [b.path for b in blobs],
        "config": config,
        "annotations": ctx.attr.annotations,
        "os": os,
        "architecture": architecture,
        "variant": variant,
        "created": ctx.attr.created,
    }
    if ctx.fragments.platform.platform_requested:
        # Built for a platform: binaries of one architecture on another's base is an error.
        params["base_platform"] = "must_match"
    ctx.actions.builtin(
        kind = "oci_image",
        params = params,
        inputs = inputs,
        outputs = [layout, digest],
        mnemonic = "OciImage",
        progress_message = "Assembling image %s" % ctx.label,
    )
    return [
        DefaultInfo(files = [layout, digest]),
        OciImageInfo(layout = layout, digest = digest, layers = made_by),
    ]

def _package_files(files):
    """The files of a layer's inputs that the SBOM lists as packages: .deb and external files."""
    return [f for f in files if f.basename.endswith(".deb") or f.path.startswith("external/")]

def _image_platform(ctx):
    """(os, architecture, variant) of the image: the attributes, else the platform it is built
    for when one was asked for (`--platforms`, an index's `platforms`), else the base's (None),
    else (scratch) the default configuration's platform, this machine's."""
    os, architecture, variant = ctx.attr.os or None, ctx.attr.architecture or None, ctx.attr.variant or None
    fragment = ctx.fragments.platform
    parts = fragment.platform.split("/")
    want = (parts[0], parts[1], parts[2] if len(parts) > 2 else None)
    if not fragment.platform_requested:
        if ctx.attr.base or os or architecture or variant:
            return os, architecture, variant  # a plain build: the base's platform, as always
        return want  # a scratch image: this machine's platform, as select() resolves
    for name, set_to, wanted in (("os", os, want[0]), ("architecture", architecture, want[1])):
        if set_to and set_to != wanted:
            fail("attribute '%s': the image says %s but it is built for platform %s (leave it unset to take the platform's)" % (name, set_to, fragment.platform))
    if variant and want[2] and variant != want[2]:
        fail("attribute 'variant': the image says %s but it is built for platform %s" % (variant, fragment.platform))
    return want[0], want[1], variant or want[2]

oci_image = rule(
    implementation = _oci_image_impl,
    fragments = ["platform"],
    doc = """An OCI image: a base (or scratch), layers from `tars`, and the image config.

Built for a platform (`pyimg build --platforms`, or an `oci_image_index` with `platforms`), an image
whose `os`, `architecture` and `variant` are unset takes the platform's, a base index gives the
entry of that platform, and a base of another platform is an error naming both.""",
    attrs = {
        "base": attr.label(doc = "The base image: an `oci_image`, `oci_layout` or `oci_pull`, or an index (`oci_image_index`, or an `oci_pull`/`oci_layout` pinned by an index digest) whose entry for the image's platform is taken. None: scratch."),
        "tars": attr.label_list(allow_files = True, doc = "Layers, lowest first: `pkg_tar`, `deb_layer` or `npm_layer` targets or tar files (plain, gzip or zstd)."),
        "entrypoint": attr.string_list(doc = "The entrypoint. Setting it clears the base image's `cmd` unless `cmd` is set too (as Docker does)."),
        "cmd": attr.string_list(doc = "Default arguments."),
        "env": attr.string_dict(doc = "Environment variables; `$VAR` and `${VAR}` expand from the base image's environment."),
        "workdir": attr.string(doc = "Working directory."),
        "user": attr.string(doc = "User (name or uid[:gid])."),
        "exposed_ports": attr.string_list(doc = "Ports, like `8080/tcp`."),
        "volumes": attr.string_list(doc = "Volume mount points."),
        "labels": attr.string_dict(doc = "Config labels."),
        "annotations": attr.string_dict(doc = "Manifest annotations."),
        "os": attr.string(doc = "Platform OS, a `GOOS` value (`linux`, `windows`). Default: the platform it is built for when one was asked for, else the base image's, else this machine's (`linux`)."),
        "architecture": attr.string(doc = "Platform architecture, a `GOARCH` value (`amd64`, `arm64`, `arm`, `386`, ...; `aarch64` is an error with \"did you mean\"). Default: the platform it is built for when one was asked for, else the base image's, else this machine's."),
        "variant": attr.string(doc = "Platform variant: `v6`/`v7`/`v8` for arm, `v8` for arm64, `v1`-`v4` for amd64."),
        "stop_signal": attr.string(doc = "The stop signal, e.g. `SIGTERM`."),
        "compression": attr.string(default = "gzip", values = _COMPRESSIONS, doc = "Layer compression: `gzip` or `zstd`."),
        "created": attr.string(default = "1970-01-01T00:00:00Z", doc = "The config's `created` time (fixed, for reproducibility)."),
    },
)

def _oci_image_index_impl(ctx):
    layout = ctx.actions.declare_directory(ctx.label.name)
    digest = ctx.actions.declare_file(ctx.label.name + ".digest")
    layouts = [_image_layout(t, "images").layout for t in ctx.attr.images]
    if ctx.attr.platforms and [t for t in ctx.attr.images if OciImageIndexInfo in t]:
        fail("attribute 'images': with `platforms`, each entry must be an image, not an index")
    ctx.actions.builtin(
        kind = "oci_index",
        params = {"images": [l.path for l in layouts], "annotations": ctx.attr.annotations},
        inputs = layouts,
        outputs = [layout, digest],
        mnemonic = "OciIndex",
        progress_message = "Assembling index %s" % ctx.label,
    )
    return [
        DefaultInfo(files = [layout, digest]),
        OciImageIndexInfo(layout = layout, digest = digest),
    ]

oci_image_index = rule(
    implementation = _oci_image_index_impl,
    doc = """A multi-platform image index over images of different platforms.

With `platforms`, each of `images` is built once per platform (a transition, as in Bazel): inside,
`select()` picks each platform's values and an `oci_image` without `architecture` takes the
platform's. The index lists the images of the first platform first.""",
    attrs = {
        "images": attr.label_list(mandatory = True, cfg = "platforms", doc = "The images: one per platform, or with `platforms` the image target(s) to build for each platform."),
        "platforms": attr.string_list(doc = "`os/architecture[/variant]` values, like `[\"linux/amd64\", \"linux/arm64/v8\"]`, checked against the OCI values: build `images` for each (default: the images as they are)."),
        "annotations": attr.string_dict(doc = "Index annotations."),
    },
)

def _oci_layout_impl(ctx):
    layout = ctx.actions.declare_directory(ctx.label.name)
    digest_file = ctx.actions.declare_file(ctx.label.name + ".digest")
    d = ctx.attr.digest
    if not d.startswith("sha256:") or len(d) != 71 or [c for c in d[7:].elems() if c not in "0123456789abcdef"]:
        fail("attribute 'digest' must be a sha256 digest like \"sha256:<64 hex digits>\", got %r" % d)
    path = ctx.attr.path
    if ctx.label.package:
        path = ctx.label.package + "/" + path
    if not ctx.files.srcs:
        fail("attribute 'path': no OCI layout at '%s' (the directory is missing or empty)" % path)
    ctx.actions.builtin(
        kind = "oci_layout_import",
        params = {"path": path, "digest": d},
        inputs = ctx.files.srcs,
        outputs = [layout, digest_file],
        mnemonic = "OciLayoutImport",
        progress_message = "Verifying %s" % ctx.attr.path,
    )
    info = OciImageInfo(layout = layout, digest = digest_file, layers = [{"base": str(ctx.label)}])
    return [DefaultInfo(files = [layout, digest_file]), info]

_oci_layout = rule(
    implementation = _oci_layout_impl,
    attrs = {
        "path": attr.string(mandatory = True),
        "digest": attr.string(mandatory = True),
        "srcs": attr.label_list(allow_files = True),
    },
)

def oci_layout(name, path, digest, **kwargs):
    """A base image pinned by `digest` from an OCI layout directory of the workspace.

    Every blob of the pinned image is checked against its digest on every build.

    Args:
      name: the target name.
      path: the layout directory, relative to the package (an error at this attribute when it
        is missing or empty).
      digest: the manifest (or index) digest, `sha256:...`. Required.
      **kwargs: common attributes (visibility, tags).
    """
    _oci_layout(
        name = name,
        path = path,
        digest = digest,
        # An empty match is reported by the rule, at the `path` the user wrote.
        srcs = native.glob([path + "/**"]),
        **kwargs
    )

def _oci_load_impl(ctx):
    tarball = ctx.actions.declare_file(ctx.label.name + ".tar")
    if OciImageIndexInfo in ctx.attr.image:
        info = ctx.attr.image[OciImageIndexInfo]
    else:
        info = _image_layout(ctx.attr.image, "image")
    ctx.actions.builtin(
        kind = "oci_load",
        params = {
            "image": info.layout.path,
            "repo_tags": ctx.attr.repo_tags,
            "platform": ctx.attr.platform or None,
            "host_platform": ctx.fragments.platform.host_platform,
        },
        inputs = [info.layout],
        outputs = [tarball],
        mnemonic = "OciLoad",
        progress_message = "Writing docker-archive %s" % tarball.short_path,
    )
    return [DefaultInfo(files = [tarball])]

oci_load = rule(
    implementation = _oci_load_impl,
    doc = """A `docker load` / `podman load` tarball; `pyimg run` pipes it into podman or docker.

A tarball holds one image: of an index (`oci_image_index`, or an `oci_pull`/`oci_layout` pinned
by an index digest), the image for `platform`, else for the platform of the machine that builds
(`linux`, its architecture and variant). An image without a variant fits any variant.""",
    attrs = {
        "image": attr.label(mandatory = True, doc = "The image, or index, to load."),
        "repo_tags": attr.string_list(doc = "Tags given to the loaded image, like `app:latest`."),
        "platform": attr.string(doc = "`os/architecture[/variant]`, like `linux/arm64`: the image of an index to load (default: this machine's platform). For a single image, the platform it must be."),
    },
)

def _oci_push_impl(ctx):
    if OciImageInfo in ctx.attr.image:
        info = ctx.attr.image[OciImageInfo]
    elif OciImageIndexInfo in ctx.attr.image:
        info = ctx.attr.image[OciImageIndexInfo]
    else:
        fail("attribute 'image': %s is not an image or index" % ctx.attr.image.label)
    if not ctx.attr.repository:
        fail("attribute 'repository' must name a repository, like \"registry.example.com/team/app\"")
    return [
        DefaultInfo(files = [info.layout, info.digest]),
        OciPushInfo(
            layout = info.layout,
            digest = info.digest,
            repository = ctx.attr.repository,
            remote_tags = ctx.attr.remote_tags,
            sign_key = ctx.attr.sign_key,
            sign_key_password_env = ctx.attr.sign_key_password_env,
        ),
    ]

oci_push = rule(
    implementation = _oci_push_impl,
    doc = "Pushes an image or index when run with `pyimg run`.",
    attrs = {
        "image": attr.label(mandatory = True, doc = "The image or index to push."),
        "repository": attr.string(mandatory = True, doc = "Where to push, `registry/repo`."),
        "remote_tags": attr.string_list(doc = "Tags to set after the push."),
        "sign_key": attr.string(doc = "Sign what was pushed (cosign format: the `sha256-<hex>.sig` tag and a Sigstore bundle referrer, docs/supply-chain.md) with this ECDSA P-256 private key, and attach its SBOM and provenance as signed attestations (of an index: the index and each platform image are signed, and each platform image gets its own SBOM): `env://VAR` (the PEM in an environment variable) or a file path, relative to the workspace. A string, not a label: the key is read when `pyimg run` pushes and never enters the build's caches or outputs."),
        "sign_key_password_env": attr.string(doc = "The environment variable holding `sign_key`'s password, when it is encrypted."),
    },
)
