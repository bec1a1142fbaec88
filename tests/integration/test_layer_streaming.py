"""An image's layer streamed from pkg_tar's spec has exactly the bytes of pkg_tar's own tarball."""

from __future__ import annotations

import hashlib
import json

from pyimg.oci.layout import Layout
from pyimg.oci.validate import validate_layout


def test_streamed_layer_equals_the_pkg_tar_file(ws):
    ws.write("p/bin/tool", "#!/bin/sh\necho hi\n", mode=0o755)
    ws.write("p/data/a.txt", "a\n")
    ws.write("p/BUILD.pyimg", """
        pkg_tar(
            name = "layer",
            srcs = glob(["bin/**", "data/**"]),
            strip_prefix = ".",
            package_dir = "/opt",
            symlinks = {"usr/bin/tool": "/opt/bin/tool"},
            modes = {"opt/data/a.txt": "0600"},
        )
        oci_image(name = "image", tars = [":layer"])
    """)
    r = ws.run("build", "//p:image", "//p:layer")
    assert r.code == 0, r.err
    validate_layout(ws.out("p/image"))
    layout = Layout(ws.out("p/image"))
    manifest = layout.manifest(layout.resolve("latest"))
    config = json.loads(layout.read_blob(manifest.config))
    tar_digest = "sha256:" + hashlib.sha256(ws.out("p/layer.tar").read_bytes()).hexdigest()
    assert config["rootfs"]["diff_ids"] == [tar_digest]


def test_image_build_does_not_write_the_tarball(ws):
    ws.write("p/f.txt", "f\n")
    ws.write("p/BUILD.pyimg", """
        pkg_tar(name = "layer", srcs = ["f.txt"])
        oci_image(name = "image", tars = [":layer"])
    """)
    r = ws.run("build", "-v", "//p:image")
    assert r.code == 0, r.err
    assert "PkgTar" not in r.err and "Writing layer p/layer.tar" in r.err
    assert not ws.out("p/layer.tar").exists()


def test_package_dir_applies_to_merged_deps(ws):
    """As in rules_pkg: `package_dir` places the entries of `deps` too, in the tarball and in
    the image layer streamed from the same spec."""
    import tarfile

    ws.write("p/f.txt", "f\n")
    ws.write("p/BUILD.pyimg", """
        pkg_tar(name = "inner", srcs = ["f.txt"], package_dir = "etc")
        pkg_tar(name = "outer", deps = [":inner"], package_dir = "/app")
        oci_image(name = "image", tars = [":outer"])
    """)
    r = ws.run("build", "//p:outer", "//p:image")
    assert r.code == 0, r.err
    with tarfile.open(ws.out("p/outer.tar")) as tf:
        assert tf.getnames() == ["app", "app/etc", "app/etc/f.txt"]
    layout = Layout(ws.out("p/image"))
    config = json.loads(layout.read_blob(layout.manifest(layout.resolve("latest")).config))
    tar_digest = "sha256:" + hashlib.sha256(ws.out("p/outer.tar").read_bytes()).hexdigest()
    assert config["rootfs"]["diff_ids"] == [tar_digest]
