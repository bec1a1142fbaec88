"""One image target built for several platforms: an index's `platforms`, `--platforms`, select()
per platform, shared layers compressed once, no-op and aquery with configurations."""

from __future__ import annotations

import json
import shutil

import pytest
from pyimg.oci.layout import Layout
from pyimg.oci.validate import validate_layout
from realtools import require, skopeo_inspect, umoci_unpack

SERVICE = '''
    genrule(
        name = "bin",
        outs = ["hello"],
        cmd = select({
            "//conditions:amd64": "printf 'built for amd64' > $@",
            "//conditions:arm64": "printf 'built for arm64' > $@",
        }),
    )

    pkg_tar(name = "bin_layer", srcs = [":bin"], package_dir = "/app")

    # The same on every platform: its layer is compressed once for all images.
    genrule(name = "etc", outs = ["motd"], cmd = "printf 'shared' > $@")

    pkg_tar(name = "etc_layer", srcs = [":etc"], package_dir = "/etc")

    oci_image(
        name = "image",
        tars = [":etc_layer", ":bin_layer"],
        cmd = select({
            "//conditions:linux_arm64_v8": ["/app/hello", "v8"],
            "//conditions:arm64": ["/app/hello", "arm"],
            "//conditions:default": ["/app/hello"],
        }),
    )

    oci_image_index(
        name = "index",
        images = [":image"],
        platforms = ["linux/amd64", "linux/arm64/v8"],
    )
'''


def _service(ws):
    ws.write("svc/BUILD.pyimg", SERVICE)
    return ws


def _index(ws, rel="svc/index"):
    layout = Layout(ws.out(rel))
    root = layout.resolve("latest")
    return layout, layout.image_index(root)


def _image_of(layout, entry):
    manifest = layout.manifest(entry)
    config = json.loads(layout.read_blob(manifest.config))
    return manifest, config


def _file_in_layer(layout, desc, name):
    import gzip
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layout.read_blob(desc)))) as tar:
        member = tar.extractfile(name)
        return member.read() if member else None


def test_index_builds_the_image_once_per_platform(ws):
    _service(ws)
    r = ws.run("build", "-v", "//svc:index")
    assert r.code == 0, r.err
    layout, index = _index(ws)
    assert [str(d.platform) for d in index.manifests] == ["linux/amd64", "linux/arm64/v8"]
    binaries = []
    for entry, want_cmd in zip(index.manifests, (["/app/hello"], ["/app/hello", "v8"]), strict=True):
        manifest, config = _image_of(layout, entry)
        # The config says the platform the image was built for (no architecture attribute).
        assert (config["os"], config["architecture"], config.get("variant")) == (
            entry.platform.os, entry.platform.architecture, entry.platform.variant)
        assert config["config"]["Cmd"] == want_cmd  # select() on the platform
        binaries.append(_file_in_layer(layout, manifest.layers[1], "app/hello"))
        shared = manifest.layers[0]
    assert binaries == [b"built for amd64", b"built for arm64"]
    # The shared layer: one blob in both manifests, made by one action.
    assert _image_of(layout, index.manifests[1])[0].layers[0] == shared
    finished = [ln.split("] ", 1)[1].rsplit(" (", 1)[0] for ln in r.err.splitlines()
                if ln.endswith("s)")]
    assert finished.count("Writing layer svc/etc_layer.tar (gzip)") == 1
    assert finished.count("Generating motd") == 1
    assert finished.count("Generating hello") == 2
    # bin twice and etc once, each layer (pkg_tar streamed into it) likewise, 2 images, 1 index
    assert "Build completed: 9 actions run, 0 cache hits" in r.err
    validate_layout(ws.out("svc/index"))


def test_two_images_share_one_compressed_layer(ws):
    ws.write("p/BUILD.pyimg", '''
        genrule(name = "etc", outs = ["motd"], cmd = "printf 'shared' > $@")

        pkg_tar(name = "etc_layer", srcs = [":etc"], package_dir = "/etc")

        oci_image(name = "a", tars = [":etc_layer"], cmd = ["a"])

        oci_image(name = "b", tars = [":etc_layer"], cmd = ["b"])

        oci_image(name = "z", tars = [":etc_layer"], compression = "zstd")

        filegroup(name = "same_tar", srcs = [":etc_layer"])

        oci_image(name = "twice", tars = [":etc_layer", ":same_tar"])
    ''')
    r = ws.run("build", "//p:a", "//p:b", "//p:z", "//p:twice")
    assert r.code == 0, r.err
    # motd, one gzip layer for a, b and twice (the tar twice: one layer action), one zstd
    # layer for z, four images
    assert "Build completed: 7 actions run" in r.err
    twice = Layout(ws.out("p/twice"))
    assert len(set(twice.manifest(twice.resolve("latest")).layers)) == 1
    assert len(twice.manifest(twice.resolve("latest")).layers) == 2
    layers = {Layout(ws.out(f"p/{n}")).manifest(Layout(ws.out(f"p/{n}")).resolve("latest")).layers
              for n in "ab"}
    assert len(layers) == 1


def test_no_op_and_incremental_with_configurations(ws):
    _service(ws)
    assert ws.run("build", "//svc:index").code == 0
    first = ws.out("svc/index.digest").read_text()
    again = ws.run("build", "//svc:index")
    assert again.code == 0 and "0 actions run" in again.err
    assert again.out.startswith("//svc:index sha256:")
    # A change that reaches one platform's configuration only.
    ws.write("svc/BUILD.pyimg", SERVICE.replace("built for arm64", "built for arm64 again"))
    r = ws.run("build", "-v", "//svc:index")
    assert r.code == 0, r.err
    assert "Generating motd" not in r.err and "Writing layer svc/etc_layer.tar" not in r.err
    assert r.err.count("Generating hello (") == 1
    assert ws.out("svc/index.digest").read_text() != first


def test_incremental_build_of_a_source_two_configurations_read(ws):
    ws.write("svc/msg.txt", "one")
    ws.write("svc/BUILD.pyimg", '''
        genrule(name = "bin", srcs = ["msg.txt"], outs = ["hello"],
                cmd = select({"//conditions:arm64": "cat $< > $@; echo arm >> $@",
                              "//conditions:default": "cat $< > $@; echo x86 >> $@"}))

        pkg_tar(name = "layer", srcs = [":bin"])

        oci_image(name = "image", tars = [":layer"])

        oci_image_index(name = "index", images = [":image"],
                        platforms = ["linux/amd64", "linux/arm64"])
    ''')
    assert ws.run("build", "//svc:index").code == 0
    ws.write("svc/msg.txt", "two")
    r = ws.run("build", "-v", "//svc:index")
    assert r.code == 0, r.err
    assert r.err.count("Generating hello (") == 2
    layout, index = _index(ws)
    got = [_file_in_layer(layout, _image_of(layout, e)[0].layers[0], "hello")
           for e in index.manifests]
    assert got == [b"twox86\n", b"twoarm\n"]
    again = ws.run("build", "//svc:index")
    assert again.code == 0 and "0 actions run" in again.err


def test_platforms_flag_builds_top_level_targets_for_each(ws):
    _service(ws)
    r = ws.run("build", "--platforms", "linux/arm64/v8,linux/amd64", "//svc:image")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert [ln.split()[:2] for ln in lines] == [["//svc:image", "[linux/arm64/v8]"],
                                                ["//svc:image", "[linux/amd64]"]]
    arm = ws.out("platforms/linux-arm64-v8/svc/image")
    assert lines[0].endswith(" pyimg-out/platforms/linux-arm64-v8/svc/image")
    layout = Layout(arm)
    _, config = _image_of(layout, layout.resolve("latest"))
    assert (config["architecture"], config["variant"]) == ("arm64", "v8")
    # The same configuration as the index's: the same image, from the cache.
    assert ws.run("build", "//svc:index").code == 0
    _, index = _index(ws)
    assert f"sha256:{index.manifests[1].digest.hex}" == lines[0].split()[2]
    # The default configuration keeps the paths it always had.
    assert ws.run("build", "//svc:image").code == 0
    assert ws.out("svc/image.digest").exists()
    # The no-op record is kept per command line: another platform is never a replay.
    for _ in range(2):
        r = ws.run("build", "--platforms", "linux/arm64", "//svc:image")
        assert r.code == 0, r.err
        assert r.out.split()[:2] == ["//svc:image", "[linux/arm64]"]


def test_bad_platforms_are_refused_at_the_attribute(ws):
    ws.write("svc/BUILD.pyimg", '''
        oci_image(name = "image")

        oci_image_index(
            name = "index",
            images = [":image"],
            platforms = ["linux/amd64", "linux/aarch64"],
        )
    ''')
    r = ws.run("build", "//svc:index")
    assert r.code == 2
    assert r.err.startswith("ERROR: svc/BUILD.pyimg:7:5: oci_image_index //svc:index: "
                            "attribute 'platforms': architecture 'aarch64' is not an OCI")
    assert 'did you mean "arm64"' in r.err
    r = ws.run("build", "--platforms", "linux/arm64/v12", "//svc:image")
    assert r.code == 2 and "--platforms: variant 'v12'" in r.err and "Traceback" not in r.err


def test_image_attribute_against_its_platform(ws):
    ws.write("svc/BUILD.pyimg", '''
        oci_image(name = "image", architecture = "amd64")

        oci_image_index(name = "index", images = [":image"], platforms = ["linux/arm64"])
    ''')
    r = ws.run("build", "//svc:index")
    assert r.code == 2
    assert r.err.startswith("ERROR: svc/BUILD.pyimg:2:27: oci_image //svc:image: attribute "
                            "'architecture': the image says amd64 but it is built for platform "
                            "linux/arm64")


def test_base_of_another_platform_is_an_error_naming_both(ws):
    # A pinned amd64 base (an oci_layout): the arm64 image on it is refused.
    ws.write("b/BUILD.pyimg", 'oci_image(name = "img", architecture = "amd64")\n')
    assert ws.run("build", "//b:img").code == 0
    shutil.copytree(ws.out("b/img"), ws.root / "svc/base")
    digest = ws.out("b/img.digest").read_text().strip()
    ws.write("svc/BUILD.pyimg", f'''
        oci_layout(name = "base", path = "base", digest = "{digest}")

        oci_image(name = "image", base = ":base")

        oci_image_index(name = "index", images = [":image"], platforms = ["linux/arm64/v8"])
    ''')
    r = ws.run("build", "//svc:index")
    assert r.code == 2
    assert "\nERROR: svc/BUILD.pyimg:4:1: OciImage //svc:image: oci_image: " in r.err
    assert "the image is for platform linux/arm64/v8 but its base" in r.err
    assert "is for platform linux/amd64" in r.err
    # The same image for amd64 is fine; so is a plain build, where the base decides.
    ws.write("svc/BUILD.pyimg", ws.root.joinpath("svc/BUILD.pyimg").read_text()
             .replace("linux/arm64/v8", "linux/amd64"))
    assert ws.run("build", "//svc:index").code == 0


def test_plain_build_relabelling_its_base_warns_naming_both(ws):
    # A plain build may still label an image arm64 over an amd64 base (the bundled example does,
    # its digests unchanged), but it warns, naming both platforms; the same base's platform
    # does not warn.
    ws.write("b/BUILD.pyimg", 'oci_image(name = "img", architecture = "amd64")\n')
    assert ws.run("build", "//b:img").code == 0
    shutil.copytree(ws.out("b/img"), ws.root / "svc/base")
    digest = ws.out("b/img.digest").read_text().strip()
    ws.write("svc/BUILD.pyimg", f'''
        oci_layout(name = "base", path = "base", digest = "{digest}")

        oci_image(name = "same", base = ":base", architecture = "amd64")

        oci_image(name = "image", base = ":base", architecture = "arm64")
    ''')
    r = ws.run("build", "//svc:same")
    assert r.code == 0 and "WARNING" not in r.err, r.err
    r = ws.run("build", "//svc:image")
    assert r.code == 0, r.err
    assert "WARNING: svc/BUILD.pyimg:6:1: OciImage //svc:image: the image says platform " \
        "linux/arm64 but its base" in r.err, r.err
    assert "is for platform linux/amd64" in r.err, r.err
    layout = Layout(ws.out("svc/image"))
    config = json.loads(layout.read_blob(layout.manifest(layout.resolve("latest")).config))
    assert config["architecture"] == "arm64"


def test_base_index_gives_the_entry_of_each_platform(ws):
    ws.write("base/BUILD.pyimg", '''
        genrule(name = "f", outs = ["f"], cmd = select({
            "//conditions:amd64": "printf amd64 > $@", "//conditions:arm64": "printf arm64 > $@"}))

        pkg_tar(name = "t", srcs = [":f"])

        oci_image(name = "one", tars = [":t"], visibility = ["//visibility:public"])

        oci_image_index(name = "base", images = [":one"],
                        platforms = ["linux/amd64", "linux/arm64"],
                        visibility = ["//visibility:public"])
    ''')
    ws.write("svc/BUILD.pyimg", '''
        oci_image(name = "image", base = "//base:base", cmd = ["/f"])

        oci_image_index(name = "index", images = [":image"],
                        platforms = ["linux/arm64", "linux/amd64"])
    ''')
    r = ws.run("build", "//svc:index")
    assert r.code == 0, r.err
    layout, index = _index(ws)
    assert [str(d.platform) for d in index.manifests] == ["linux/arm64", "linux/amd64"]
    for entry in index.manifests:
        manifest, _ = _image_of(layout, entry)
        assert _file_in_layer(layout, manifest.layers[0], "f") == entry.platform.architecture.encode()


def test_aquery_shows_the_configuration(ws):
    _service(ws)
    r = ws.run("aquery", "--output", "json", "deps(//svc:index)")
    assert r.code == 0, r.err
    rows = json.loads(r.out)["actions"]
    genrules = sorted((row["configuration"], row["outputs"][0]) for row in rows
                      if row["target"] == "//svc:bin")
    assert genrules == [("", "pyimg-out/svc/hello"),
                        ("linux/amd64", "pyimg-out/platforms/linux-amd64/svc/hello"),
                        ("linux/arm64/v8", "pyimg-out/platforms/linux-arm64-v8/svc/hello")]
    text = ws.run("aquery", "--platforms", "linux/arm64", "//svc:bin").out
    assert "Configuration: linux/arm64\n" in text
    assert "pyimg-out/platforms/linux-arm64/svc/hello" in text


@pytest.mark.slow
def test_skopeo_and_umoci_read_the_index(ws, tmp_path):
    require("skopeo", "umoci")
    _service(ws)
    assert ws.run("build", "//svc:index").code == 0
    layout = ws.out("svc/index")
    raw = skopeo_inspect(layout)
    assert [(m["platform"]["architecture"], m["platform"].get("variant")) for m in raw["manifests"]] \
        == [("amd64", None), ("arm64", "v8")]
    # umoci reads one image by tag: a copy of the layout tagged with each index entry.
    _, index = _index(ws)
    for entry in index.manifests:
        copy = tmp_path / entry.platform.architecture
        shutil.copytree(layout, copy)
        data = json.loads((copy / "index.json").read_text())
        data["manifests"] = [{**entry.to_json(),
                              "annotations": {"org.opencontainers.image.ref.name": "latest"}}]
        (copy / "index.json").write_text(json.dumps(data))
        rootfs = umoci_unpack(copy, tmp_path / f"bundle-{entry.platform.architecture}")
        got = (rootfs / "app/hello").read_text()
        assert got == f"built for {entry.platform.architecture}"
        assert (rootfs / "etc/motd").read_text() == "shared"


@pytest.mark.slow
def test_podman_runs_the_host_image_of_the_index(ws, tmp_path):
    require("podman", "runc")
    import subprocess

    from realtools import podman_env

    shutil.copy("/bin/busybox", ws.root / "busybox")
    (ws.root / "busybox").chmod(0o755)
    ws.write("svc/BUILD.pyimg", SERVICE + '''
    pkg_tar(name = "sh", files = {"//:busybox": "bin/busybox"})

    oci_image(
        name = "runnable",
        tars = [":sh", ":etc_layer", ":bin_layer"],
        entrypoint = ["/bin/busybox", "cat", "/etc/motd", "/app/hello"],
    )

    oci_image_index(
        name = "runnable_index",
        images = [":runnable"],
        platforms = ["linux/arm64/v8", "linux/amd64"],
    )

    oci_load(name = "load", image = ":runnable_index", repo_tags = ["pyimg.test/platforms:x"])
    ''')
    ws.write("BUILD.pyimg", 'exports_files(["busybox"])\n')
    r = ws.run("build", "//svc:load")
    assert r.code == 0, r.err
    env = podman_env(tmp_path / "podman")
    load = subprocess.run(["podman", "load", "-i", str(ws.out("svc/load.tar"))],
                          env=env, capture_output=True, text=True)
    assert load.returncode == 0, load.stderr
    run = subprocess.run(["podman", "run", "--rm", "pyimg.test/platforms:x"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    from pyimg.oci.platforms import host_platform

    assert run.stdout == f"sharedbuilt for {host_platform().architecture}"
