"""Sparse layouts: a pulled base's layers stay out of every layout until an output needs their
bytes (docs/external-inputs.md, "Lazy base layers"); the builtins reference them by digest and fetch them only to load."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from oci_workspace import Workspace
from pyimg.core.digest import Digest
from pyimg.errors import UserInputError
from pyimg.oci.layout import Layout


class RemoteLayers:
    """A BlobSource holding blobs "in a registry": counts what the builtins fetch."""

    def __init__(self, blobs: dict[Digest, Path]) -> None:
        self.blobs = blobs
        self.fetched: list[Digest] = []

    def knows(self, digest: Digest) -> bool:
        return digest in self.blobs

    def fetch(self, digest: Digest) -> Path:
        self.fetched.append(digest)
        return self.blobs[digest]


def _files(ws: Workspace, d: str) -> list[str]:
    return sorted(str(p.relative_to(ws.root)) for p in ws.path(d).rglob("*") if p.is_file())


def _layers(ws: Workspace, layout_dir: str) -> list[Digest]:
    layout = Layout(ws.path(layout_dir))
    return [d.digest for d in layout.manifest(layout.resolve()).layers]


def _pulled(ws: Workspace, tmp_path: Path) -> tuple[str, Digest, RemoteLayers]:
    """A base image whose layer lives only in `RemoteLayers`, imported the way oci_pull does."""
    full = ws.simple_image("base")
    (layer,) = _layers(ws, full)
    remote_copy = tmp_path / "remote" / layer.hex
    remote_copy.parent.mkdir()
    ws.path(f"{full}/blobs/sha256/{layer.hex}").rename(remote_copy)
    remote = RemoteLayers({layer: remote_copy})
    digest = ws.path(full + ".digest").read_text()
    ws.run("oci_layout_import", {"path": full, "digest": digest}, _files(ws, full),
           ["pyimg-out/pulled.digest"], dirs=["pyimg-out/pulled"], lazy=remote)
    return "pyimg-out/pulled", layer, remote


def test_import_image_and_index_leave_lazy_layers_out(ws: Workspace, tmp_path: Path) -> None:
    pulled, layer, remote = _pulled(ws, tmp_path)
    assert layer in _layers(ws, pulled)
    assert not ws.path(f"{pulled}/blobs/sha256/{layer.hex}").exists()

    img = ws.image("img", [], base=pulled, validate=False, lazy=remote)
    assert _layers(ws, img) == [layer]
    assert not ws.path(f"{img}/blobs/sha256/{layer.hex}").exists()
    ws.run("oci_index", {"images": [img]}, [img], ["pyimg-out/idx.digest"],
           dirs=["pyimg-out/idx"], lazy=remote)
    assert not ws.path(f"pyimg-out/idx/blobs/sha256/{layer.hex}").exists()
    assert remote.fetched == []  # references only: no bytes were needed


def test_image_digest_does_not_depend_on_laziness(ws: Workspace, tmp_path: Path) -> None:
    pulled, layer, remote = _pulled(ws, tmp_path)
    lazy_img = ws.image("lazy", [], base=pulled, validate=False, lazy=remote, config={"cmd": ["x"]})
    ws.path(f"pyimg-out/base/blobs/sha256/{layer.hex}").write_bytes(remote.blobs[layer].read_bytes())
    full_img = ws.image("full", [], base="pyimg-out/base", config={"cmd": ["x"]})
    assert ws.path(lazy_img + ".digest").read_text() == ws.path(full_img + ".digest").read_text()


def test_load_fetches_the_bytes_it_writes(ws: Workspace, tmp_path: Path) -> None:
    pulled, layer, remote = _pulled(ws, tmp_path)
    ws.run("oci_load", {"repo_tags": ["app:1"]}, [pulled], ["pyimg-out/load.tar"], lazy=remote)
    assert remote.fetched == [layer]
    with tarfile.open(ws.path("pyimg-out/load.tar")) as tf:
        (entry,) = json.loads(tf.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert f"blobs/sha256/{layer.hex}" in entry["Layers"]
        assert tf.extractfile(f"blobs/sha256/{layer.hex}").read()  # type: ignore[union-attr]


def test_a_missing_layer_nobody_pins_is_still_an_error(ws: Workspace, tmp_path: Path) -> None:
    pulled, layer, _ = _pulled(ws, tmp_path)
    with pytest.raises(UserInputError, match=f"layer blob {layer} is missing"):
        ws.image("img", [], base=pulled, validate=False, lazy=RemoteLayers({}))
    with pytest.raises(UserInputError, match=f"blob {layer} is missing"):
        ws.run("oci_layout_import", {"path": pulled, "digest": str(Layout(ws.path(pulled)).resolve().digest)},
               _files(ws, pulled), [], dirs=["pyimg-out/again"])
