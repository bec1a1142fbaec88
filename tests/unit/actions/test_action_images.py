"""oci_layer, oci_image, oci_index, oci_layout_import and oci_load, called as the engine would."""

from __future__ import annotations

import json
import os
import shutil
import tarfile

import pytest
from oci_workspace import Workspace
from pyimg.core.digest import canonical_json, digest_bytes
from pyimg.errors import IntegrityError, UserInputError
from pyimg.oci import media_types as mt
from pyimg.oci.layout import Layout, LayoutWriter
from pyimg.oci.model import Descriptor, Manifest
from pyimg.oci.validate import validate_layout


def _image(ws: Workspace, out: str) -> tuple[Layout, dict, dict]:
    layout = Layout(ws.path(out))
    desc = layout.resolve()
    manifest = json.loads(layout.read_blob(desc))
    m = layout.manifest(desc)
    return layout, manifest, json.loads(layout.read_blob(m.config))


def test_oci_layer_descriptor(ws: Workspace) -> None:
    ws.write("f", "x")
    desc, blob = ws.layer(ws.tar("t", {"entries": [{"path": "f", "src": "f"}]}, ["f"]), "zstd")
    d = json.loads(ws.path(desc).read_bytes())
    assert set(d) == {"mediaType", "digest", "size", "diffId"}
    assert d["mediaType"] == mt.OCI_LAYER_ZSTD
    assert d["digest"] == str(digest_bytes(ws.path(blob).read_bytes()))
    assert d["diffId"] == str(digest_bytes(ws.path("pyimg-out/t.tar").read_bytes()))


def test_scratch_image(ws: Workspace) -> None:
    out = ws.simple_image(
        config={"entrypoint": ["/app/bin/run"], "env": {"A": "1"}, "labels": {"l": "v"}},
        annotations={"org.opencontainers.image.title": "t"},
        architecture="arm64",
        variant="v8",
    )
    layout, manifest, cfg = _image(ws, out)
    assert manifest["mediaType"] == mt.OCI_MANIFEST
    assert manifest["annotations"] == {"org.opencontainers.image.title": "t"}
    assert (cfg["architecture"], cfg["variant"], cfg["created"]) == (
        "arm64",
        "v8",
        "1970-01-01T00:00:00Z",
    )
    assert cfg["config"] == {"Entrypoint": ["/app/bin/run"], "Env": ["A=1"], "Labels": {"l": "v"}}
    assert len(cfg["history"]) == 1 and "pyimg" == cfg["history"][0]["created_by"]
    digest = ws.path(out + ".digest").read_text()
    assert digest == str(layout.resolve().digest)
    assert (ws.path(out) / "index.json").read_bytes().count(b"ref.name") == 1


def test_image_on_base_reuses_layers_and_applies_docker_rules(ws: Workspace) -> None:
    base = ws.simple_image("base", config={"entrypoint": ["/e"], "cmd": ["c"], "env": {"P": "/b"}})
    ws.write("n", "new")
    tar = ws.tar("n", {"entries": [{"path": "n", "src": "n"}]}, ["n"])
    top = ws.image(
        "top",
        [ws.layer(tar, "zstd")],
        base=base,
        config={"entrypoint": ["/new"], "env": {"P": "/x:$P"}},
    )
    blayout, bmanifest, _ = _image(ws, base)
    layout, manifest, cfg = _image(ws, top)
    assert manifest["layers"][0] == bmanifest["layers"][0]
    assert manifest["layers"][1]["mediaType"] == mt.OCI_LAYER_ZSTD
    blob = manifest["layers"][0]["digest"].split(":")[1]
    assert (
        os.stat(ws.path(top) / "blobs/sha256" / blob).st_ino
        == os.stat(ws.path(base) / "blobs/sha256" / blob).st_ino
    )
    assert cfg["config"]["Entrypoint"] == ["/new"] and "Cmd" not in cfg["config"]
    assert cfg["config"]["Env"] == ["P=/x:/b"]
    assert len(cfg["rootfs"]["diff_ids"]) == 2 and len(cfg["history"]) == 2


def test_base_whose_config_lists_other_diff_ids_than_layers(ws: Workspace) -> None:
    base = ws.simple_image("base")
    layout = Layout(ws.path(base))
    top = layout.resolve()
    m = layout.manifest(top)
    cfg = json.loads(layout.read_blob(m.config))
    cfg["rootfs"]["diff_ids"] = []
    cfg_bytes = canonical_json(cfg)
    writer = LayoutWriter(ws.path("bad"))
    writer.add_file(m.layers[0].digest, layout.blob_path(m.layers[0].digest))
    config = Descriptor(mt.OCI_CONFIG, writer.add_bytes(cfg_bytes), len(cfg_bytes))
    data = Manifest(config, m.layers).to_bytes()
    digest = writer.add_bytes(data)
    writer.finish([Descriptor(mt.OCI_MANIFEST, digest, len(data))])
    with pytest.raises(UserInputError, match=f"manifest {digest} has 1 layers but its config"):
        ws.image("top", [], base="bad")


def test_base_that_is_a_docker_image_index(ws: Workspace) -> None:
    """A docker schema-2 base under a manifest list: platform selection, media types to OCI."""
    amd = ws.simple_image("amd")
    layout, manifest, cfg = _image(ws, amd)
    root = ws.path("dock")
    shutil.copytree(ws.path(amd), root)
    dm = dict(manifest, mediaType=mt.DOCKER_MANIFEST)
    dm["config"] = dict(dm["config"], mediaType=mt.DOCKER_CONFIG)
    dm["layers"] = [dict(x, mediaType=mt.DOCKER_LAYER_GZIP) for x in dm["layers"]]
    data = json.dumps(dm, indent=2).encode()
    (root / "blobs/sha256" / digest_bytes(data).hex).write_bytes(data)
    entry = {
        "mediaType": mt.DOCKER_MANIFEST,
        "digest": str(digest_bytes(data)),
        "size": len(data),
        "platform": {"os": "linux", "architecture": "amd64"},
    }
    other = dict(entry, platform={"os": "linux", "architecture": "s390x"})
    lst = json.dumps(
        {"schemaVersion": 2, "mediaType": mt.DOCKER_MANIFEST_LIST, "manifests": [entry, other]}
    ).encode()
    (root / "blobs/sha256" / digest_bytes(lst).hex).write_bytes(lst)
    (root / "index.json").write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": mt.DOCKER_MANIFEST_LIST,
                        "digest": str(digest_bytes(lst)),
                        "size": len(lst),
                    }
                ],
            }
        )
    )
    out = ws.image("ontop", [], base="dock")
    _, m2, _ = _image(ws, out)
    assert [x["mediaType"] for x in m2["layers"]] == [mt.OCI_LAYER_GZIP]
    assert m2["config"]["mediaType"] == mt.OCI_CONFIG
    with pytest.raises(UserInputError, match="0 images for linux/arm64"):
        ws.image("nope", [], base="dock", architecture="arm64")


def test_layer_blob_mismatch(ws: Workspace) -> None:
    ws.write("f", "x")
    desc, blob = ws.layer(ws.tar("t", {"entries": [{"path": "f", "src": "f"}]}, ["f"]))
    ws.write(blob, b"garbage")
    with pytest.raises(IntegrityError, match="blobs\\[0\\]"):
        ws.image("i", [(desc, blob)])


def test_bad_image_params(ws: Workspace) -> None:
    with pytest.raises(UserInputError, match="unknown config keys"):
        ws.image("i", [], config={"entry_point": ["x"]})
    with pytest.raises(UserInputError, match="pair up"):
        ws.run("oci_image", {"layers": ["a"], "blobs": []}, [], ["o.digest"], dirs=["o"])
    with pytest.raises(UserInputError, match="RFC 3339"):
        ws.image("i2", [], created="now")


def test_index(ws: Workspace) -> None:
    a = ws.simple_image("a")
    b = ws.simple_image("b", architecture="arm64")
    ws.run(
        "oci_index", {"images": [a, b]}, [a, b], ["pyimg-out/idx.digest"], dirs=["pyimg-out/idx"]
    )
    validate_layout(ws.path("pyimg-out/idx"))
    layout = Layout(ws.path("pyimg-out/idx"))
    root = layout.resolve()
    assert root.media_type == mt.OCI_INDEX
    idx = layout.image_index(root)
    assert [str(d.platform) for d in idx.manifests] == ["linux/amd64", "linux/arm64"]
    assert ws.path("pyimg-out/idx.digest").read_text() == str(root.digest)
    with pytest.raises(UserInputError, match="both linux/amd64"):
        ws.run("oci_index", {"images": [a, a]}, [a], ["x.digest"], dirs=["x"])


def _layout_files(ws: Workspace, d: str) -> list[str]:
    return sorted(str(p.relative_to(ws.root)) for p in ws.path(d).rglob("*") if p.is_file())


def test_layout_import(ws: Workspace) -> None:
    img = ws.simple_image("src")
    digest = ws.path(img + ".digest").read_text()
    files = _layout_files(ws, img)
    params = {"path": img, "digest": digest}
    ws.run("oci_layout_import", params, files, ["pyimg-out/imp.digest"], dirs=["pyimg-out/imp"])
    validate_layout(ws.path("pyimg-out/imp"))
    assert str(Layout(ws.path("pyimg-out/imp")).resolve().digest) == digest
    # Also as a blob that index.json does not list, and as one directory input.
    (ws.path(img) / "index.json").write_text('{"schemaVersion":2,"manifests":[]}')
    ws.run("oci_layout_import", params, [img], [], dirs=["pyimg-out/imp2"])
    validate_layout(ws.path("pyimg-out/imp2"))


def test_layout_import_errors(ws: Workspace) -> None:
    img = ws.simple_image("src")
    digest = ws.path(img + ".digest").read_text()
    layout, manifest, _ = _image(ws, img)
    files = _layout_files(ws, img)
    other = str(digest_bytes(b"nothing"))
    with pytest.raises(UserInputError, match="neither in index.json nor a blob"):
        ws.run("oci_layout_import", {"path": img, "digest": other}, files, [], dirs=["o1"])
    layer = manifest["layers"][0]["digest"]
    layer_file = f"{img}/blobs/sha256/{layer.split(':')[1]}"
    # the engine says the file has other content: named, with both digests
    call = ws.call({"path": img, "digest": digest}, files, [], dirs=["o2"])
    call.input_digests[layer_file] = digest_bytes(b"evil")  # type: ignore[index]
    with pytest.raises(
        UserInputError, match=f"corrupt: expected {layer}, found {digest_bytes(b'evil')}"
    ):
        ws.builtins["oci_layout_import"](call)
    missing = [f for f in files if f != layer_file]
    with pytest.raises(UserInputError, match=f"blob {layer} is missing"):
        ws.run("oci_layout_import", {"path": img, "digest": digest}, missing, [], dirs=["o3"])
    with pytest.raises(UserInputError, match="digest"):
        ws.run("oci_layout_import", {"path": img, "digest": "latest"}, files, [], dirs=["o4"])


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_load(ws: Workspace, compression: str) -> None:
    img = ws.simple_image(compression=compression)
    ws.run("oci_load", {"repo_tags": ["app:1"]}, [img], ["pyimg-out/load.tar"])
    with tarfile.open(ws.path("pyimg-out/load.tar")) as tf:
        (entry,) = json.loads(tf.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert entry["RepoTags"] == ["app:1"]
    with pytest.raises(UserInputError, match="repository:tag"):
        ws.run("oci_load", {"repo_tags": ["App"]}, [img], ["pyimg-out/l2.tar"])


def test_base_of_another_platform(ws: Workspace) -> None:
    """Built for a platform (base_platform = must_match), the image refuses a base of another,
    naming both; a plain build's `architecture` still relabels, as the bundled example does."""
    base = ws.simple_image("amdbase", architecture="amd64")
    with pytest.raises(UserInputError) as e:
        ws.image("arm", [], base=base, architecture="arm64", variant="v8",
                 base_platform="must_match")
    assert e.value.message == (
        "oci_image: the image is for platform linux/arm64/v8 but its base (pyimg-out/amdbase) "
        "is for platform linux/amd64: build the base for linux/arm64/v8 (or pick its index "
        "entry), or set the image's platform to linux/amd64")
    ws.image("relabelled", [], base=base, architecture="arm64")
    ws.image("same", [], base=base, os="linux", architecture="amd64", variant="v2",
             base_platform="must_match")  # the base names no variant: it runs on any
    armv7 = ws.simple_image("armv7", architecture="arm", variant="v7")
    with pytest.raises(UserInputError, match="linux/arm/v6 but its base .* linux/arm/v7"):
        ws.image("v6", [], base=armv7, architecture="arm", variant="v6",
                 base_platform="must_match")
    arm64 = ws.simple_image("arm64", architecture="arm64")  # no variant: v8
    ws.image("v8", [], base=arm64, architecture="arm64", variant="v8",
             base_platform="must_match")


def test_base_index_entry_by_platform(ws: Workspace) -> None:
    a = ws.simple_image("a")
    b = ws.simple_image("b", architecture="arm64")
    ws.run("oci_index", {"images": [a, b]}, [a, b], ["pyimg-out/idx.digest"],
           dirs=["pyimg-out/idx"])
    # arm64 written with its v8, as a configuration may say, finds the entry without a variant.
    out = ws.image("on_arm", [], base="pyimg-out/idx", architecture="arm64", variant="v8",
                   base_platform="must_match")
    _, _, cfg = _image(ws, out)
    _, _, bcfg = _image(ws, b)
    assert cfg["rootfs"] == bcfg["rootfs"] and cfg["variant"] == "v8"
