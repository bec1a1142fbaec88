"""The built-in image differ: config fields, tar headers, content byte ranges, missing entries,
index platforms, and consequences (diff_ids, descriptor digests) left unreported."""

from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import Any

from pyimg.core.digest import canonical_json, digest_bytes
from pyimg.oci import media_types as mt
from pyimg.oci.compress import gzip_member
from pyimg.oci.diff import Difference, diff_descriptors, diff_layer_files, json_path
from pyimg.oci.layout import Layout, LayoutWriter
from pyimg.oci.model import Descriptor, Index, Manifest, Platform
from pyimg.oci.tar import TarEntry, write_tar
from pyimg.oci.validate import validate_image


def _tar(entries: list[TarEntry]) -> bytes:
    buf = io.BytesIO()
    write_tar(buf, entries)
    return buf.getvalue()


def _manifest(
    w: LayoutWriter,
    layers: list[list[TarEntry]],
    env: list[str],
    arch: str = "amd64",
    compress: Any = gzip_member,
) -> Descriptor:
    descs, diff_ids = [], []
    for entries in layers:
        tar = _tar(entries)
        blob = compress(tar)
        descs.append(Descriptor(mt.OCI_LAYER_GZIP, w.add_bytes(blob), len(blob)))
        diff_ids.append(str(digest_bytes(tar)))
    cfg = canonical_json(
        {
            "architecture": arch,
            "os": "linux",
            "config": {"Env": env},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
    )
    m = Manifest(Descriptor(mt.OCI_CONFIG, w.add_bytes(cfg), len(cfg)), tuple(descs))
    data = m.to_bytes()
    return Descriptor(mt.OCI_MANIFEST, w.add_bytes(data), len(data))


def _image(
    root: Path, layers: list[list[TarEntry]], env: list[str] | None = None, **kw: Any
) -> tuple[Layout, Descriptor]:
    w = LayoutWriter(root)
    desc = _manifest(w, layers, env or ["A=1", "B=2", "C=3"], **kw)
    w.finish([desc])
    validate_image(root)
    layout = Layout(root)
    return layout, layout.resolve(None)


def _diff(tmp_path: Path, a: dict[str, Any], b: dict[str, Any]) -> list[Difference]:
    la, da = _image(tmp_path / "a", **a)
    lb, db = _image(tmp_path / "b", **b)
    return diff_descriptors(la, da, lb, db)


BASE = [
    TarEntry("etc/hello", data=b"hello world\n"),
    TarEntry("bin/tool", data=b"#!x", executable=True),
]


def test_identical_images_have_no_difference(tmp_path):
    assert _diff(tmp_path, {"layers": [BASE]}, {"layers": [BASE]}) == []


def test_config_field_is_named_by_json_path(tmp_path):
    diffs = _diff(
        tmp_path,
        {"layers": [BASE], "env": ["A=1", "B=2", "C=3"]},
        {"layers": [BASE], "env": ["A=1", "B=2", "C=4"]},
    )
    assert len(diffs) == 1
    d = diffs[0]
    assert (d.kind, d.field, d.a, d.b) == ("config-field", "config.Env[2]", "C=3", "C=4")
    assert d.where == ("config",)
    assert "config field config.Env[2]" in d.describe()


def test_mode_only_difference_is_a_tar_header_mode(tmp_path):
    a = [TarEntry("etc/hello", data=b"hi\n", mode=0o644)]
    b = [TarEntry("etc/hello", data=b"hi\n", mode=0o600)]
    diffs = _diff(tmp_path, {"layers": [BASE, a]}, {"layers": [BASE, b]})
    # The layer's diff_id in the config and its digest in the manifest are consequences.
    assert len(diffs) == 1
    d = diffs[0]
    assert (d.kind, d.field, d.entry, d.layer) == ("tar-header", "mode", "etc/hello", 1)
    assert (d.a, d.b) == (0o644, 0o600)
    assert d.layer_digests is not None and d.layer_digests[0] != d.layer_digests[1]
    text = d.describe("run 1", "run 2")
    assert "layers[1] > entry etc/hello" in text
    assert "tar header field mode: run 1 0644, run 2 0600" in text


def test_owner_difference_is_named(tmp_path):
    a = [TarEntry("etc/hello", data=b"hi\n", uid=0)]
    b = [TarEntry("etc/hello", data=b"hi\n", uid=1000)]
    (d,) = _diff(tmp_path, {"layers": [a]}, {"layers": [b]})
    assert (d.kind, d.field, d.a, d.b) == ("tar-header", "uid", 0, 1000)


def test_content_difference_gives_the_byte_range(tmp_path):
    a = [TarEntry("etc/hello", data=b"hello world, and more\n")]
    b = [TarEntry("etc/hello", data=b"hello WORLD, and more\n")]
    (d,) = _diff(tmp_path, {"layers": [a]}, {"layers": [b]})
    assert (d.kind, d.entry, d.offset, d.length) == ("content", "etc/hello", 6, 5)
    assert "content differs at bytes 6..10 (5 bytes" in d.describe()


def test_content_span_runs_to_the_last_differing_byte(tmp_path):
    a = [TarEntry("f", data=b"a" * 3000 + b"xyz" + b"a" * 10)]
    b = [TarEntry("f", data=b"a" * 3000 + b"x-z" + b"a" * 9 + b"b")]
    (d,) = _diff(tmp_path, {"layers": [a]}, {"layers": [b]})
    assert (d.offset, d.length) == (3001, 12)


def test_entry_missing_on_one_side(tmp_path):
    a = [*BASE, TarEntry("etc/extra", data=b"x")]
    (d,) = _diff(tmp_path, {"layers": [a]}, {"layers": [BASE]})
    assert (d.kind, d.entry, d.a, d.b) == ("entry-missing", "etc/extra", "etc/extra", None)
    assert "entry etc/extra is only in run 1 (missing in run 2)" in d.describe("run 1", "run 2")
    (d,) = _diff(tmp_path / "rev", {"layers": [BASE]}, {"layers": [a]})
    assert (d.a, d.b) == (None, "etc/extra")


def test_trailing_entry_missing(tmp_path):
    a = [TarEntry("z/last", data=b"x")]
    (d,) = _diff(tmp_path, {"layers": [[*BASE, *a]]}, {"layers": [BASE]})
    assert d.kind == "entry-missing"
    assert d.entry in ("z", "z/last")  # the parent directory comes first


def test_layer_count_difference(tmp_path):
    (d,) = _diff(tmp_path, {"layers": [BASE]}, {"layers": [BASE, BASE]})
    assert (d.kind, d.field, d.a, d.b) == ("manifest-field", "layers (count)", 1, 2)


def test_compression_only_difference(tmp_path):
    other = lambda data: gzip.compress(data, compresslevel=1, mtime=12345)  # noqa: E731
    (d,) = _diff(tmp_path, {"layers": [BASE]}, {"layers": [BASE], "compress": other})
    assert d.kind == "compression"


def _index(root: Path, images: list[tuple[str, list[str]]]) -> tuple[Layout, Descriptor]:
    w = LayoutWriter(root)
    entries = []
    for arch, env in images:
        desc = _manifest(w, [BASE], env, arch=arch)
        entries.append(desc.with_platform(Platform("linux", arch)))
    data = Index(tuple(entries)).to_bytes()
    w.finish([Descriptor(mt.OCI_INDEX, w.add_bytes(data), len(data))])
    layout = Layout(root)
    return layout, layout.resolve(None)


def test_index_names_the_platform(tmp_path):
    la, da = _index(tmp_path / "a", [("amd64", ["A=1"]), ("arm64", ["A=1"])])
    lb, db = _index(tmp_path / "b", [("amd64", ["A=1"]), ("arm64", ["A=2"])])
    (d,) = diff_descriptors(la, da, lb, db)
    assert (d.kind, d.field, d.platform) == ("config-field", "config.Env[0]", "linux/arm64")
    assert d.where == ("manifests[1] linux/arm64", "config")


def test_index_entry_only_on_one_side(tmp_path):
    la, da = _index(tmp_path / "a", [("amd64", ["A=1"]), ("arm64", ["A=1"])])
    lb, db = _index(tmp_path / "b", [("amd64", ["A=1"])])
    (d,) = diff_descriptors(la, da, lb, db)
    assert (d.kind, d.field, d.a, d.b) == ("index-entry", "linux/arm64", "linux/arm64", None)


def test_layer_files_plain_tars(tmp_path):
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    a.write_bytes(_tar([TarEntry("x", "symlink", target="one")]))
    b.write_bytes(_tar([TarEntry("x", "symlink", target="two")]))
    d = diff_layer_files(a, b)
    assert d is not None and (d.kind, d.field, d.a, d.b) == ("tar-header", "linkname", "one", "two")
    assert diff_layer_files(a, a) is None


def test_json_path_rendering():
    assert json_path(("config", "Env", 2)) == "config.Env[2]"
    assert json_path(("config", "Labels", "org.example.x")) == 'config.Labels["org.example.x"]'
    assert Difference("config-field", field="x", a="1", b="2").to_json()["kind"] == "config-field"
