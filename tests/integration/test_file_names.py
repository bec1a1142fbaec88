"""Any file name a file system allows packs (docs/concepts.md, "File names"): spaces, any UTF-8 character,
shell and label punctuation, long names; they reach the layer byte-exact (PAX records only where
ustar cannot hold them), the genrule command quoted, query and aquery unambiguous; names that are
not UTF-8, and rule names outside Bazel's set, are clear errors."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from realtools import podman_env, require, umoci_unpack
from workspace_helpers import Workspace

# Below p/rootfs; they land under /data in the layer.
NAMES = [
    "has space.txt",
    "données-ñ-日本語.txt",
    "x+@=,~#!$&'();[].txt",
    'dq"uote\\back`tick{}|<>?^%*.txt',
    "File::Spec.3pm",
    "@scope/pkg/index.d.ts",
    "d i r/ü.txt",
    "🙂.txt",
    "e" * 95,  # data/eee...: 100 bytes, the longest name ustar holds
    "deep/" * 25 + "f.txt",  # 130 bytes in all
    "l" * 200 + ".txt",
]
# In the package itself: as labels they need the leading ':' that glob() adds.
TOP_NAMES = ["@top.txt", "Time::HiRes.3pm"]
LINK = ("data/lien-ü", "données-ñ-日本語.txt")  # a symlink whose target is not ASCII

BUILD = r'''
pkg_tar(
    name = "layer",
    srcs = glob(["rootfs/**"]),
    strip_prefix = "rootfs",
    package_dir = "/data",
    symlinks = {"data/lien-ü": "données-ñ-日本語.txt"},
)

pkg_tar(name = "top", srcs = glob(["@*", "*::*"]))

pkg_tar(name = "bb", srcs = ["tools/busybox"], package_dir = "/bin", mode = "0755")

oci_image(name = "image", tars = [":layer", ":top"])

oci_image(
    name = "runnable",
    tars = [":bb", ":layer", ":top"],
    entrypoint = ["/bin/busybox", "find", "/data", "/@top.txt", "/Time::HiRes.3pm"],
)

oci_load(name = "load", image = ":runnable", repo_tags = ["names.local/names:latest"])

genrule(
    name = "listing",
    srcs = glob(["rootfs/**"]) + [":@top.txt"],
    outs = ["list ing.txt"],
    cmd = "for f in $(SRCS); do printf '%s\\n' \"$$f\"; done > $@; " +
          "cat $(location rootfs/has space.txt) $(location rootfs/x+@=,~#!$$&'();[].txt) >> $@",
)

genrule(
    name = "one",
    srcs = ["rootfs/données-ñ-日本語.txt"],
    outs = ["o n e.txt"],
    cmd = "cat $< > $@ && echo $(@D) >> $(OUTS)",
)
'''


def _content(name: str) -> str:
    return f"content of {name}\n"


def _make(ws: Workspace) -> Workspace:
    ws.write("p/BUILD.pyimg", BUILD)
    for name in NAMES:
        ws.write(f"p/rootfs/{name}", _content(name))
    for name in TOP_NAMES:
        ws.write(f"p/{name}", _content(name))
    busybox = ws.root / "p/tools/busybox"
    busybox.parent.mkdir(parents=True, exist_ok=True)
    if Path("/bin/busybox").exists():
        shutil.copyfile("/bin/busybox", busybox)
    else:
        busybox.write_text("#!/bin/sh\n")
    return ws


def _tar_entries(path: Path) -> list[tuple[bytes, bytes, str, dict[bytes, bytes]]]:
    """(name, link target, "ustar" or "pax", PAX records) of each member, read from the raw
    512-byte blocks, not through tarfile: the bytes are what is checked."""
    data = path.read_bytes()
    out = []
    pos = 0
    pax: dict[bytes, bytes] = {}
    while True:
        header = data[pos:pos + 512]
        if header == b"\0" * 512:
            return out
        size = int(header[124:136].rstrip(b"\0 ") or b"0", 8)
        body = data[pos + 512:pos + 512 + size]
        pos += 512 + -(-size // 512) * 512
        if header[156:157] == b"x":
            while body:
                length, _, rest = body.partition(b" ")
                record, body = rest[:int(length) - len(length) - 2], body[int(length):]
                key, _, value = record.partition(b"=")
                pax[key] = value
            continue
        assert header[345:500].strip(b"\0") == b"", "ustar prefix field is never used"
        name = pax.get(b"path", header[0:100].rstrip(b"\0"))
        link = pax.get(b"linkpath", header[157:257].rstrip(b"\0"))
        out.append((name, link, "pax" if pax else "ustar", pax))
        pax = {}


def _expected_paths(in_tar: bool = False) -> list[bytes]:
    """Every path of the two layers, parents included; as a tar names them, directories end
    with '/'."""
    paths = {f"data/{n}" for n in NAMES} | set(TOP_NAMES) | {LINK[0]}
    for p in list(paths):
        while "/" in p:
            p = p.rsplit("/", 1)[0]
            paths.add(p + "/" if in_tar else p)
    return sorted(p.encode() for p in paths)


def _needs_pax(b: bytes) -> bool:
    return not b.isascii() or len(b) > 100


@pytest.fixture
def built(ws: Workspace) -> Workspace:
    _make(ws)
    r = ws.run("build", "//p:layer", "//p:top", "//p:image", "//p:listing", "//p:one")
    assert r.code == 0, r.err
    return ws


def test_layer_holds_every_name_byte_exact_with_pax_only_where_ustar_cannot(built):
    entries = _tar_entries(built.out("p/layer.tar"))
    entries += _tar_entries(built.out("p/top.tar"))
    got = sorted(name for name, _, _, _ in entries)
    assert got == _expected_paths(in_tar=True)
    for name, link, kind, pax in entries:
        needs = _needs_pax(name) or _needs_pax(link)
        assert kind == ("pax" if needs else "ustar"), name
        # Only the records that carry the name: no times, no charset marker.
        assert set(pax) <= {b"path", b"linkpath"}, (name, pax)
        if name == LINK[0].encode():
            assert link == LINK[1].encode() and set(pax) == {b"path", b"linkpath"}
    # The layer's tar order is bytewise, as the digest needs.
    layer_names = [n for n, _, _, _ in _tar_entries(built.out("p/layer.tar"))]
    assert layer_names == sorted(layer_names)


def test_digest_is_the_same_from_another_path_and_cache(built, tmp_path):
    other = Workspace(tmp_path / "elsewhere" / "deeper" / "w s", tmp_path / "cache two")
    _make(other)
    r = other.run("build", "//p:image", "//p:layer")
    assert r.code == 0, r.err
    assert other.out("p/image.digest").read_text() == built.out("p/image.digest").read_text()
    assert other.out("p/layer.tar").read_bytes() == built.out("p/layer.tar").read_bytes()


def test_genrule_paths_are_quoted_for_the_shell(built):
    listing = built.out("p/list ing.txt").read_text().splitlines()
    srcs = [f"p/rootfs/{n}" for n in sorted(NAMES)] + ["p/@top.txt"]
    assert listing[: len(srcs)] == srcs  # $(SRCS): one shell word per file
    assert listing[len(srcs):] == [
        _content("has space.txt").strip(), _content("x+@=,~#!$&'();[].txt").strip()
    ]
    one = built.out("p/o n e.txt").read_text()  # $<, $@, $(@D) and $(OUTS)
    assert one == _content("données-ñ-日本語.txt") + "pyimg-out/p\n"


def test_no_op_and_incremental_builds_keep_the_names(built):
    first = built.out("p/image.digest").read_text()
    again = built.run("build", "//p:layer", "//p:top", "//p:image", "//p:listing", "//p:one")
    assert again.code == 0 and "0 actions run" in again.err, again.err
    (built.root / "p/rootfs/d i r/ü.txt").write_text("changed\n")
    changed = built.run("build", "//p:layer", "//p:top", "//p:image", "//p:listing", "//p:one")
    assert changed.code == 0, changed.err
    assert built.out("p/image.digest").read_text() != first
    names = [n for n, _, _, _ in _tar_entries(built.out("p/layer.tar"))]
    assert names == [p for p in _expected_paths(in_tar=True) if p.startswith(b"data")]


def test_query_and_aquery_name_such_files(built):
    r = built.run("query", '"//p:rootfs/has space.txt"')
    assert (r.code, r.out) == (0, "//p:rootfs/has space.txt\n"), r.err
    r = built.run("query", "rdeps(//p:all, '//p:rootfs/données-ñ-日本語.txt', 1)",
                  "--output", "label_kind")
    assert r.code == 0, r.err
    assert r.out.splitlines() == [
        "pkg_tar rule //p:layer",
        "genrule rule //p:listing",
        "genrule rule //p:one",
        "source file //p:rootfs/données-ñ-日本語.txt",
    ]
    r = built.run("query", "deps(//p:top)")
    assert r.out.splitlines() == ["//p:@top.txt", "//p:Time::HiRes.3pm", "//p:top"]
    r = built.run("query", "deps(//p:layer)", "--output", "graph")
    assert '  "//p:layer" -> "//p:rootfs/dq\\"uote\\\\back`tick{}|<>?^%*.txt";\n' in r.out
    r = built.run("query", '"//p:rootfs/dq\\"uote"')  # no escapes inside quotes, as in Bazel
    assert r.code == 2
    r = built.run("aquery", "//p:one")
    assert r.code == 0, r.err
    assert "  Inputs: ['p/rootfs/données-ñ-日本語.txt']\n" in r.out
    assert "  Outputs: ['pyimg-out/p/o n e.txt']\n" in r.out


def test_rule_names_keep_bazels_characters_with_a_clear_error(ws):
    ws.write("p/BUILD.pyimg", 'filegroup(\n    name = "has space",\n    srcs = [],\n)\n')
    r = ws.run("build", "//p:all")
    assert r.code == 2
    assert r.err.startswith(
        "ERROR: p/BUILD.pyimg:2:5: filegroup: invalid target name 'has space': ' ' (U+0020) is "
        "not allowed in the name of a rule target (allowed: letters A-Z a-z, digits and "
    ), r.err


def test_a_name_that_is_not_utf8_is_a_clear_error(ws):
    ws.write("p/BUILD.pyimg", 'pkg_tar(name = "layer", srcs = glob(["rootfs/**"]))\n')
    ws.write("p/rootfs/ok.txt", "ok\n")
    (ws.root / os.fsdecode(b"p/rootfs/caf\xe9.txt")).write_text("x")
    r = ws.run("build", "//p:layer")
    assert r.code == 2
    assert r.err.startswith("ERROR: p/BUILD.pyimg:1:32: glob(['rootfs/**']): the name "
                            "'caf\\xe9.txt' in directory p/rootfs is not valid UTF-8"), r.err
    assert "Traceback" not in r.err


@pytest.mark.slow
def test_umoci_unpacks_exactly_the_names(built, tmp_path):
    require("umoci")
    rootfs = umoci_unpack(built.out("p/image"), tmp_path / "bundle")
    found = set()
    for dirpath, dirnames, filenames in os.walk(os.fsencode(rootfs)):
        for n in dirnames + filenames:
            found.add(os.path.relpath(os.path.join(dirpath, n), os.fsencode(rootfs)))
    assert sorted(found) == _expected_paths()
    for name in NAMES:
        assert (rootfs / "data" / name).read_text() == _content(name)
    assert os.readlink(rootfs / LINK[0]) == LINK[1]


@pytest.mark.slow
def test_podman_runs_the_image_and_sees_the_names(built, tmp_path):
    require("podman", "runc")
    if not Path("/bin/busybox").exists():
        pytest.skip("not installed: busybox-static")
    r = built.run("build", "//p:load")
    assert r.code == 0, r.err
    env = podman_env(tmp_path / "podman")
    load = subprocess.run(["podman", "load", "-i", str(built.out("p/load.tar"))],
                          env=env, capture_output=True)
    assert load.returncode == 0, load.stderr
    run = subprocess.run(["podman", "run", "--rm", "names.local/names:latest"],
                         env=env, capture_output=True, timeout=120)
    assert run.returncode == 0, run.stderr
    # `find /data /@top.txt /Time::HiRes.3pm`: every path the layers hold, one a line.
    seen = sorted(line.removeprefix(b"/") for line in run.stdout.splitlines())
    assert seen == _expected_paths()


def test_an_action_output_directory_with_a_name_that_is_not_utf8_is_a_clear_error(ws):
    ws.write("p/defs.bzl", r'''
def _impl(ctx):
    d = ctx.actions.declare_directory("tree")
    ctx.actions.run_shell(
        outputs = [d],
        command = "mkdir -p %s && printf x > %s/$(printf 'caf\\351')" % (d.path, d.path),
        mnemonic = "Tree",
    )
    return [DefaultInfo(files = [d])]

tree = rule(implementation = _impl, attrs = {})
''')
    ws.write("p/BUILD.pyimg", 'load(":defs.bzl", "tree")\ntree(name = "t")\n')
    r = ws.run("build", "//p:t")
    assert r.code == 1
    assert r.err.startswith(
        "ERROR: p/BUILD.pyimg:2:1: Tree //p:t: output directory 'pyimg-out/p/tree' holds a file "
        "whose path is not valid UTF-8: 'caf\\xe9'"
    ), r.err
