"""Providers of pyimg's rules: what each rule hands to the targets that depend on it."""

OciLayerInfo = provider(
    doc = "A layer tarball made by pkg_tar or deb_layer.",
    fields = {
        "tar": "File: the uncompressed, canonical layer tarball.",
        "spec": "The parameters that describe the tarball's bytes exactly (JSON text).",
        "writer": "The built-in action whose parameters `spec` holds: None for pkg_tar, or \"deb_layer\".",
        "inputs": "list of File: what `spec` reads.",
    },
)

OciImageInfo = provider(
    doc = "An image: an OCI layout directory holding exactly one image manifest.",
    fields = {
        "layout": "File (directory): the OCI image layout.",
        "digest": "File: holds the manifest digest, `sha256:...`.",
    },
)

OciImageIndexInfo = provider(
    doc = "A multi-platform image index: an OCI layout directory holding one index.",
    fields = {
        "layout": "File (directory): the OCI image layout.",
        "digest": "File: holds the index digest, `sha256:...`.",
    },
)

HostToolInfo = provider(
    doc = "A program of the host machine, declared so that its identity enters the action key.",
    fields = {
        "path": "Absolute path of the program on the host.",
        "data": "Absolute host paths the program reads, hashed into its identity.",
        "identity": "\"auto\" or \"bytes\" (docs/concepts.md, \"Tools are inputs\").",
    },
)

OciPushInfo = provider(
    doc = "What `pyimg run` pushes: an image or index layout, where to, and which tags.",
    fields = {
        "layout": "File (directory): the OCI layout to push.",
        "digest": "File: holds the digest being pushed.",
        "repository": "The destination, `registry/repo`.",
        "remote_tags": "Tags to set after the push.",
        "sign_key": "The private key to sign with after the push (`env://VAR` or a path), or \"\".",
        "sign_key_password_env": "The environment variable holding the key's password, or \"\".",
    },
)
