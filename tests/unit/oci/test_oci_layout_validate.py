"""Layout writing and reading, the validator's checks, and the docker-archive writer."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from pyimg.core.digest import canonical_json, digest_bytes
from pyimg.errors import IntegrityError, UserInputError
from pyimg.oci import media_types as mt
from pyimg.oci.config import ConfigChanges, apply_config
from pyimg.oci.docker_archive import check_repo_tag, write_docker_archive
from pyimg.oci.layer import layer_from_tar
from pyimg.oci.layout import REF_NAME, Layout, LayoutWriter, walk
from pyimg.oci.model import Descriptor, Manifest
from pyimg.oci.tar import TarEntry, write_tar
from pyimg.oci.validate import validate_image, validate_layout


def make_layout(tmp_path: Path, compression: str = "gzip", name: str = "layout") -> Path:
    tar = tmp_path / f"{name}.tar"
    with open(tar, "wb") as f:
        write_tar(f, [TarEntry("etc/hello", data=b"hi\n"), TarEntry("bin", "dir")])
    blob = tmp_path / f"{name}.blob"
    layer = layer_from_tar(tar, blob, compression)
    root = tmp_path / name
    w = LayoutWriter(root)
    w.add_file(layer.descriptor.digest, blob)
    cfg = canonical_json(apply_config(None, ConfigChanges(), [layer.diff_id]))
    m = Manifest(Descriptor(mt.OCI_CONFIG, w.add_bytes(cfg), len(cfg)), (layer.descriptor,))
    data = m.to_bytes()
    w.finish([Descriptor(mt.OCI_MANIFEST, w.add_bytes(data), len(data), ((REF_NAME, "latest"),))])
    return root


def _manifest(root: Path) -> tuple[Layout, Manifest]:
    layout = Layout(root)
    return layout, layout.manifest(layout.resolve())


def test_written_layout_is_valid_and_hard_linked(tmp_path: Path) -> None:
    root = make_layout(tmp_path)
    assert json.loads((root / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    (desc,) = validate_layout(root)
    assert validate_image(root) == desc == validate_image(root, str(desc.digest))
    layout, m = _manifest(root)
    assert (
        os.stat(layout.blob_path(m.layers[0].digest)).st_ino
        == os.stat(tmp_path / "layout.blob").st_ino
    )
    assert [d.digest for d in walk(layout, desc)] == [
        desc.digest,
        m.config.digest,
        m.layers[0].digest,
    ]


def _corrupt(path: Path, data: bytes) -> None:
    path.unlink()  # break the hard link before writing
    path.write_bytes(data)


def test_missing_blob(tmp_path: Path) -> None:
    root = make_layout(tmp_path)
    layout, m = _manifest(root)
    layout.blob_path(m.layers[0].digest).unlink()
    with pytest.raises(IntegrityError, match=f"blob {m.layers[0].digest}.*missing"):
        validate_layout(root)


def test_wrong_size_and_digest(tmp_path: Path) -> None:
    root = make_layout(tmp_path)
    layout, m = _manifest(root)
    p = layout.blob_path(m.layers[0].digest)
    good = p.read_bytes()
    _corrupt(p, good + b"x")
    with pytest.raises(IntegrityError, match=f"blob {m.layers[0].digest}: size"):
        validate_layout(root)
    _corrupt(p, bytes([good[0] ^ 1]) + good[1:])
    with pytest.raises(IntegrityError, match="hashes to"):
        validate_layout(root)


def test_wrong_diff_id(tmp_path: Path) -> None:
    root = make_layout(tmp_path)
    layout, m = _manifest(root)
    cfg = json.loads(layout.read_blob(m.config))
    cfg["rootfs"]["diff_ids"] = [str(digest_bytes(b"other"))]
    _rewrite(root, layout, m, cfg=cfg)
    with pytest.raises(IntegrityError, match="uncompresses to"):
        validate_layout(root)


def test_media_type_lies(tmp_path: Path) -> None:
    root = make_layout(tmp_path)
    layout, m = _manifest(root)
    _rewrite(root, layout, m, layer_type=mt.OCI_LAYER_ZSTD)
    with pytest.raises(IntegrityError, match="is gzip-compressed but its media type"):
        validate_layout(root)


def _rewrite(
    root: Path, layout: Layout, m: Manifest, cfg: dict | None = None, layer_type: str | None = None
) -> None:
    w = LayoutWriter(root)
    config = m.config
    if cfg is not None:
        data = canonical_json(cfg)
        config = Descriptor(mt.OCI_CONFIG, w.add_bytes(data), len(data))
    layers = tuple(x.with_media_type(layer_type) if layer_type else x for x in m.layers)
    data = Manifest(config, layers).to_bytes()
    w.finish([Descriptor(mt.OCI_MANIFEST, w.add_bytes(data), len(data))])


def test_not_a_layout(tmp_path: Path) -> None:
    with pytest.raises(IntegrityError, match="no oci-layout"):
        validate_layout(tmp_path)
    with pytest.raises(UserInputError, match="no oci-layout"):
        Layout(tmp_path)


def test_resolve_by_ref_and_errors(tmp_path: Path) -> None:
    root = make_layout(tmp_path)
    layout = Layout(root)
    assert layout.resolve("latest") == layout.resolve("other-name-but-only-one")
    d = layout.resolve()
    LayoutWriter(root).finish(
        [d.with_annotations({REF_NAME: "a"}), d.with_annotations({REF_NAME: "b"})]
    )
    with pytest.raises(UserInputError, match="none is named 'latest'"):
        Layout(root).resolve("latest")
    assert dict(Layout(root).resolve("b").annotations)[REF_NAME] == "b"


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_docker_archive(tmp_path: Path, compression: str) -> None:
    root = make_layout(tmp_path, compression)
    layout, m = _manifest(root)
    outs = []
    for _ in range(2):
        buf = io.BytesIO()
        write_docker_archive(buf, layout, layout.resolve(), ["example.com/a/b:1.0"])
        outs.append(buf.getvalue())
    assert outs[0] == outs[1]
    with tarfile.open(fileobj=io.BytesIO(outs[0])) as tf:
        names = tf.getnames()
        manifest = json.loads(tf.extractfile("manifest.json").read())  # type: ignore[union-attr]
        (entry,) = manifest
        assert entry["RepoTags"] == ["example.com/a/b:1.0"]
        assert entry["Config"] == f"blobs/sha256/{m.config.digest.hex}"
        layer_bytes = tf.extractfile(entry["Layers"][0]).read()  # type: ignore[union-attr]
        assert {x.mtime for x in tf.getmembers()} == {0}
    assert names == sorted(names)
    cfg = json.loads(layout.read_blob(m.config))
    if compression == "zstd":
        # stored decompressed, named by its diff_id
        assert entry["Layers"][0] == "blobs/sha256/" + cfg["rootfs"]["diff_ids"][0].split(":")[1]
        assert str(digest_bytes(layer_bytes)) == cfg["rootfs"]["diff_ids"][0]
    else:
        assert digest_bytes(layer_bytes) == m.layers[0].digest


@pytest.mark.parametrize("tag", ["app", "App:1", "app:", "/app:1", "a b:1"])
def test_bad_repo_tags(tag: str) -> None:
    with pytest.raises(UserInputError, match="repository:tag"):
        check_repo_tag(tag)


def test_good_repo_tags() -> None:
    for tag in ("app:1", "localhost:5000/a/b:latest", "docker.io/library/busybox:1.36.1"):
        assert check_repo_tag(tag) == tag


def test_diff_id_count_is_one_check_with_one_error(tmp_path: Path) -> None:
    # A config listing more diff_ids than its manifest has layers does not describe the image:
    # the validator and the docker-archive writer report it alike (as oci_image does for a base).
    root = make_layout(tmp_path)
    layout, m = _manifest(root)
    cfg = json.loads(layout.read_blob(m.config))
    cfg["rootfs"]["diff_ids"] *= 2
    _rewrite(root, layout, m, cfg=cfg)
    layout = Layout(root)
    top = layout.resolve()
    expected = f"manifest {top.digest} has 1 layers but its config .* lists 2 diff_ids"
    with pytest.raises(UserInputError, match=expected):
        validate_layout(root)
    with pytest.raises(UserInputError, match=expected):
        write_docker_archive(io.BytesIO(), layout, top, [])
