"""`pyimg audit`: runs under varied conditions, differences explained down to the file and the
action that made it, `--against` a published layout or digest, and the reports."""

from __future__ import annotations

import io
import json
import re
import shutil
import tarfile
from pathlib import Path

import pytest
from pyimg.core.digest import canonical_json, digest_bytes
from pyimg.oci import media_types as mt
from pyimg.oci.compress import gzip_member, open_decompressed
from pyimg.oci.layout import Layout
from pyimg.oci.model import Descriptor, Index, Manifest, load_json
from pyimg.oci.validate import validate_image
from realtools import require
from workspace_helpers import REPO, Workspace

RANDOM_BUILD = """\
genrule(
    name = "stamp",
    outs = ["stamp.txt"],
    cmd = "printf 'hello\\\\n' > $@; head -c 16 /dev/urandom >> $@",
)

pkg_tar(
    name = "layer",
    srcs = [":stamp", "static.txt"],
    package_dir = "/etc",
)

oci_image(
    name = "image",
    tars = [":layer"],
    architecture = "amd64",
)
"""

STEADY_BUILD = """\
genrule(
    name = "greeting",
    outs = ["greeting.txt"],
    cmd = "echo 'hello, reproducible world' > $@",
)

pkg_tar(
    name = "layer",
    srcs = [":greeting", "static.txt"],
    package_dir = "/etc",
)

oci_image(
    name = "image",
    tars = [":layer"],
    architecture = "amd64",
    env = {"GREETING": "hello"},
)
"""


def _random_ws(ws: Workspace) -> Workspace:
    ws.write("app/BUILD.pyimg", RANDOM_BUILD)
    ws.write("app/static.txt", "static\n")
    return ws


def test_random_genrule_output_is_named_down_to_the_byte_range_and_the_genrule(ws, tmp_path):
    _random_ws(ws)
    report = tmp_path / "report.json"
    md = tmp_path / "report.md"
    r = ws.run("audit", "//app:image", "--report", str(report), "--report", str(md))
    assert r.code == 3, r.err
    text = r.out + r.err
    assert "entry etc/stamp.txt" in text
    # `hello\n` agrees; the 16 random bytes differ (the first or last may agree by chance).
    assert re.search(r"content differs at bytes (6|7)\.\.(20|21) \(1[456] bytes", text), text
    assert "Genrule //app:stamp (app/BUILD.pyimg:1:1)" in text
    # The layer streams pkg_tar's tar from its spec: the layer action leads to the genrule.
    assert "OciLayer //app:image" in text
    # The error itself points at the genrule's line in the BUILD file.
    assert "ERROR: app/BUILD.pyimg:1:1: audit: not reproducible: //app:image" in r.err
    # Progress: one line per run.
    assert r.err.count("audit: run ") == 2
    data = json.loads(report.read_text())
    assert data["schema"] == "pyimg-audit/1" and data["reproducible"] is False
    (d,) = data["differences"]
    assert d["difference"]["kind"] == "content"
    assert d["difference"]["entry"] == "etc/stamp.txt"
    assert d["difference"]["offset"] in (6, 7) and d["difference"]["length"] in (14, 15, 16)
    assert [a["mnemonic"] for a in d["actions"]] == ["OciLayer", "Genrule"]
    assert d["actions"][-1]["label"] == "//app:stamp"
    assert len(data["runs"]) == 2
    assert data["runs"][0]["conditions"]["umask"] != data["runs"][1]["conditions"]["umask"]
    assert "# pyimg audit: NOT reproducible" in md.read_text()
    assert "Genrule `//app:stamp` at `app/BUILD.pyimg:1:1`" in md.read_text()


def test_steady_workspace_is_reproducible_over_three_runs(ws, tmp_path):
    ws.write("app/BUILD.pyimg", STEADY_BUILD)
    ws.write("app/static.txt", "static\n")
    r = ws.run("audit", "//app:image", "--runs", "3", "--report", str(tmp_path / "r.json"))
    assert r.code == 0, r.err
    assert "reproducible" in r.out
    assert r.err.count("audit: run ") == 3
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["reproducible"] is True and data["differences"] == []
    assert all(o["identical"] for o in data["outputs"])
    # Audit runs leave nothing behind in the workspace.
    assert not (ws.root / "pyimg-out").exists()


def test_runs_must_be_at_least_two(ws):
    _random_ws(ws)
    assert ws.run("audit", "//app:image", "--runs", "1").code == 2


@pytest.mark.slow
def test_example_workspace_is_reproducible(tmp_path):
    require("gcc", "aarch64-linux-gnu-gcc")
    root = tmp_path / "examples"
    shutil.copytree(REPO / "examples", root, ignore=shutil.ignore_patterns("pyimg-out"))
    ws = Workspace(root, tmp_path / "cache")
    r = ws.run("audit", "//...")
    assert r.code == 0, r.out + r.err
    assert "identical across 2 runs: reproducible" in r.out


# -- --against -------------------------------------------------------------------------------


def _tamper(layout_dir: Path, dest: Path, member: str, new_bytes: bytes) -> str:
    """A valid copy of the image in `layout_dir` with `new_bytes` written over the start of
    `member`'s content in its layer (same size: only the content differs); returns its digest."""
    shutil.copytree(layout_dir, dest)
    for p in dest.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    layout = Layout(dest)
    root = layout.resolve(None)
    manifest = layout.manifest(root)
    cfg = load_json(layout.read_blob(manifest.config), "config")
    layers = list(manifest.layers)
    for i, desc in enumerate(layers):
        with open(layout.blob_path(desc.digest), "rb") as f:
            reader, _ = open_decompressed(f)
            tar = bytearray(reader.read())
        with tarfile.open(fileobj=io.BytesIO(bytes(tar))) as tf:
            names = {m.name: m for m in tf}
        if member not in names:
            continue
        m = names[member]
        assert len(new_bytes) <= m.size
        tar[m.offset_data : m.offset_data + len(new_bytes)] = new_bytes
        blob = gzip_member(bytes(tar))
        digest = digest_bytes(blob)
        layout.blob_path(digest).write_bytes(blob)
        layers[i] = Descriptor(desc.media_type, digest, len(blob))
        cfg["rootfs"]["diff_ids"][i] = str(digest_bytes(bytes(tar)))
        break
    else:
        raise AssertionError(f"{member} is in no layer")
    cfg_bytes = canonical_json(cfg)
    cfg_digest = digest_bytes(cfg_bytes)
    layout.blob_path(cfg_digest).write_bytes(cfg_bytes)
    new = Manifest(Descriptor(mt.OCI_CONFIG, cfg_digest, len(cfg_bytes)), tuple(layers))
    data = new.to_bytes()
    digest = digest_bytes(data)
    layout.blob_path(digest).write_bytes(data)
    entry = Descriptor(mt.OCI_MANIFEST, digest, len(data), root.annotations)
    (dest / "index.json").write_bytes(Index((entry,)).to_bytes())
    validate_image(dest)
    return str(digest)


def _steady(ws: Workspace) -> Workspace:
    ws.write("app/BUILD.pyimg", STEADY_BUILD)
    ws.write("app/static.txt", "static\n")
    return ws


def test_against_a_tampered_layout_names_the_file(ws, tmp_path):
    _steady(ws)
    assert ws.run("build", "//app:image").code == 0
    published = tmp_path / "published"
    _tamper(ws.out("app/image"), published, "etc/greeting.txt", b"HELLO")
    report = tmp_path / "against.json"
    r = ws.run("audit", "//app:image", "--against", str(published), "--report", str(report))
    assert r.code == 3, r.err
    text = r.out + r.err
    assert "layers[0] > entry etc/greeting.txt: content differs at bytes 0..4 (5 bytes" in text
    assert "published" in text and "rebuild" in text
    assert "Genrule //app:greeting (app/BUILD.pyimg:1:1)" in text
    data = json.loads(report.read_text())
    assert data["against"]["ref"] == str(published)
    assert data["differences"][0]["sides"] == ["published", "rebuild"]


def test_against_an_identical_layout_with_tag_and_a_digest(ws, tmp_path):
    _steady(ws)
    assert ws.run("build", "//app:image").code == 0
    digest = ws.out("app/image.digest").read_text().strip()
    copy = tmp_path / "copy"
    shutil.copytree(ws.out("app/image"), copy)
    assert ws.run("audit", "//app:image", "--against", str(copy)).code == 0
    assert ws.run("audit", "//app:image", "--against", f"oci:{copy}:latest").code == 0
    assert ws.run("audit", "//app:image", "--against", digest).code == 0
    r = ws.run("audit", "//app:image", "--against", "sha256:" + "0" * 64)
    assert r.code == 3
    assert "//app:image" in r.out and "content is not at hand" in r.out


def test_against_needs_exactly_one_image(ws):
    _steady(ws)
    ws.write(
        "app/BUILD.pyimg",
        STEADY_BUILD + 'oci_image(name = "other", tars = [":layer"], architecture = "arm64")\n',
    )
    r = ws.run("audit", "//app:all", "--against", "sha256:" + "0" * 64)
    assert r.code == 2, r.err


@pytest.mark.slow
def test_against_a_registry_reference(ws, tmp_path, monkeypatch):
    import sys

    require("docker-registry")
    sys.path.insert(0, str(Path(__file__).parent / "registry"))
    from pyimg.registry.client import push_layout
    from regtestlib import start_registry

    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    _steady(ws)
    assert ws.run("build", "//app:image").code == 0
    published = tmp_path / "published"
    _tamper(ws.out("app/image"), published, "etc/greeting.txt", b"HELLO")
    reg = start_registry(tmp_path / "registry")
    try:
        push_layout(published, f"{reg.host}/team/app:v1")
        r = ws.run("audit", "//app:image", "--against", f"{reg.host}/team/app:v1")
        assert r.code == 3, r.err
        assert "entry etc/greeting.txt: content differs at bytes 0..4" in r.out
        assert "Genrule //app:greeting" in r.out
        ok = tmp_path / "ok"
        shutil.copytree(ws.out("app/image"), ok)
        push_layout(ok, f"{reg.host}/team/app:v2")
        assert ws.run("audit", "//app:image", "--against", f"{reg.host}/team/app:v2").code == 0
    finally:
        reg.stop()


def _start_order(ws: Workspace, seed: str | None, out: str) -> list[str]:
    import os

    env = {k: v for k, v in os.environ.items() if k != "PYIMG_SCHEDULE_SEED"}
    if seed is not None:
        env["PYIMG_SCHEDULE_SEED"] = seed
    p = ws.spawn("build", "--jobs", "1", "--output-base", out, "//gen:all", env=env)
    _, err = p.communicate()
    assert p.returncode == 0, err
    return [ln.split()[2] for ln in err.decode().splitlines() if "Generating" in ln]


def test_schedule_seed_permutes_the_order_of_independent_actions(ws, tmp_path):
    rules = [
        f'genrule(name = "g{j}", outs = ["g{j}.txt"], cmd = "echo {j} > $@")' for j in range(6)
    ]
    ws.write("gen/BUILD.pyimg", "\n".join(rules) + "\n")
    plain = _start_order(ws, None, str(tmp_path / "ob1"))
    ws.run("clean", "--expunge")
    shuffled = _start_order(ws, "7", str(tmp_path / "ob2"))
    assert sorted(plain) == sorted(shuffled) and len(plain) == 6
    assert plain != shuffled
