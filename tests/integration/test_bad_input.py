"""Bad input exits 2 with one message that starts with the user's file:line:col, never a traceback."""

from __future__ import annotations

import pytest


def _fails(ws, *args, code=2):
    r = ws.run("build", *args)
    assert r.code == code, (r.code, r.err)
    assert "Traceback" not in r.err
    assert r.err.startswith("ERROR: "), r.err
    return r.err


def _fails_running(ws, *args, code=2):
    """Like _fails, for an error found when an action runs (progress lines come first)."""
    r = ws.run("build", *args)
    assert r.code == code, (r.code, r.err)
    assert "Traceback" not in r.err
    lines = r.err.splitlines()
    assert len(lines) == 1 + sum(1 for ln in lines if ln.startswith("[")), r.err
    return next(ln for ln in lines if ln.startswith("ERROR: "))


def _at(err, where):
    """The message starts with exactly `where` (file:line:col)."""
    assert err.startswith(f"ERROR: {where}: "), err


def test_syntax_error_points_at_line_and_column(ws):
    ws.write("p/BUILD.pyimg", 'genrule(name = "a", outs = ["a"], cmd = "true")\ngenrule(name = "b" outs = [])\n')
    err = _fails(ws, "//p:a")
    assert err.startswith("ERROR: p/BUILD.pyimg:2:20: Parse error")


def test_syntax_error_on_compound_first_line_keeps_line_numbers(ws):
    ws.write("p/BUILD.pyimg", "def f():\n    return nope\nf()\n")
    err = _fails(ws, "//p:all")
    assert "p/BUILD.pyimg:2:12" in err and "nope" in err


def test_unknown_function_suggests(ws):
    ws.write("p/BUILD.pyimg", 'genrul(name = "a")\n')
    err = _fails(ws, "//p:all")
    assert "p/BUILD.pyimg:1:1" in err and "genrule" in err


def test_bad_attribute_type(ws):
    ws.write("p/BUILD.pyimg", '\n\ngenrule(name = "a", srcs = "x.txt", outs = ["a"], cmd = "true")\n')
    err = _fails(ws, "//p:a")
    assert err.strip() == (  # the attribute's own line and column
        "ERROR: p/BUILD.pyimg:3:21: genrule //p:a: attribute 'srcs' must be a list of labels, "
        'got "x.txt"'
    )


def test_bad_attribute_type_on_a_line_of_its_own(ws):
    ws.write("p/BUILD.pyimg", """
        genrule(
            name = "a",
            outs = ["a"],
            cmd = 7,  # cmd = "not this one"
        )
    """)
    err = _fails(ws, "//p:a")
    _at(err, "p/BUILD.pyimg:5:5")
    assert "attribute 'cmd' must be a string" in err


def test_syntax_error_at_end_of_file(ws):
    ws.write("p/BUILD.pyimg", 'genrule(name = "a", outs = ["a"], cmd = "true"\n')
    err = _fails(ws, "//p:a")
    _at(err, "p/BUILD.pyimg:1:47")
    assert "(at end of file)" in err


def test_unknown_attribute_did_you_mean(ws):
    ws.write("p/BUILD.pyimg", 'genrule(name = "a", out = ["a"], cmd = "true")\n')
    err = _fails(ws, "//p:a")
    _at(err, "p/BUILD.pyimg:1:21")
    assert "did you mean 'outs'" in err


def test_missing_label_did_you_mean(ws):
    ws.write("p/BUILD.pyimg", """
        genrule(name = "hello", outs = ["h"], cmd = "true")
        genrule(name = "b", srcs = [":helo"], outs = ["b"], cmd = "true")
    """)
    err = _fails(ws, "//p:b")
    _at(err, "p/BUILD.pyimg:3:21")  # the attribute that names it
    assert "//p:helo" in err and "did you mean ':hello'" in err


def test_missing_target_on_command_line(ws):
    ws.write("p/BUILD.pyimg", 'genrule(name = "hello", outs = ["h"], cmd = "true")\n')
    assert "did you mean ':hello'" in _fails(ws, "//p:hallo")


def test_missing_package(ws):
    assert "no such package 'nope'" in _fails(ws, "//nope:x")


def test_visibility_violation(ws):
    ws.write("lib/BUILD.pyimg", 'genrule(name = "private", outs = ["x"], cmd = "touch $@")\n')
    ws.write("app/BUILD.pyimg", 'genrule(name = "a", srcs = ["//lib:private"], outs = ["a"], cmd = "touch $@")\n')
    err = _fails(ws, "//app:a")
    _at(err, "app/BUILD.pyimg:1:21")
    assert "not visible" in err and "declared at lib/BUILD.pyimg:1:1" in err


def test_package_default_visibility_and_subpackages(ws):
    ws.write("lib/BUILD.pyimg", """
        package(default_visibility = ["//app:__subpackages__"])
        genrule(name = "shared", outs = ["x"], cmd = "touch $@")
    """)
    ws.write("app/sub/BUILD.pyimg", 'genrule(name = "a", srcs = ["//lib:shared"], outs = ["a"], cmd = "touch $@")\n')
    ws.write("other/BUILD.pyimg", 'genrule(name = "a", srcs = ["//lib:shared"], outs = ["a"], cmd = "touch $@")\n')
    assert ws.run("build", "//app/sub:a").code == 0
    assert "not visible" in _fails(ws, "//other:a")


def test_dependency_cycle_is_printed(ws):
    ws.write("p/BUILD.pyimg", """
        filegroup(name = "a", srcs = [":b"])
        filegroup(name = "b", srcs = [":c"])
        filegroup(name = "c", srcs = [":a"])
    """)
    err = _fails(ws, "//p:a")
    _at(err, "p/BUILD.pyimg:2:23")  # //p:a's srcs, where the cycle starts
    assert "dependency cycle: //p:a -> //p:b -> //p:c -> //p:a" in err


def test_duplicate_target_name(ws):
    ws.write("p/BUILD.pyimg", 'filegroup(name = "a")\nfilegroup(name = "a")\n')
    err = _fails(ws, "//p:all")
    _at(err, "p/BUILD.pyimg:2:1")
    assert "already declared at p/BUILD.pyimg:1:1" in err


def test_output_path_conflict(ws):
    ws.write("p/BUILD.pyimg", """
        genrule(name = "a", outs = ["same.txt"], cmd = "touch $@")
        genrule(name = "b", outs = ["same.txt"], cmd = "touch $@")
    """)
    err = _fails(ws, "//p:all")
    _at(err, "p/BUILD.pyimg:3:1")
    assert "output path conflict" in err


def test_load_cycle(ws):
    ws.write("p/a.bzl", 'load(":b.bzl", "B")\nA = 1\n')
    ws.write("p/b.bzl", 'load(":a.bzl", "A")\nB = 1\n')
    ws.write("p/BUILD.pyimg", 'load(":a.bzl", "A")\n')
    err = _fails(ws, "//p:all")
    _at(err, "p/b.bzl:1:1")  # the load() that closes the cycle
    assert "load cycle: p/BUILD.pyimg -> p/a.bzl -> p/b.bzl -> p/a.bzl" in err


def test_load_of_a_missing_file(ws):
    ws.write("p/BUILD.pyimg", '# defs\n\nload(":nope.bzl", "X")\n')
    err = _fails(ws, "//p:all")
    _at(err, "p/BUILD.pyimg:3:1")
    assert "p/nope.bzl does not exist" in err


def test_fail_in_a_macro_points_at_the_build_file(ws):
    ws.write("p/defs.bzl", 'def m(name):\n    fail("m() needs a better name than " + name)\n')
    ws.write("p/BUILD.pyimg", 'load(":defs.bzl", "m")\n\nm(name = "x")\n')
    err = _fails(ws, "//p:all")
    _at(err, "p/defs.bzl:2:5")  # the fail() itself, then the call that led there
    assert "needs a better name than x" in err and "called from p/BUILD.pyimg:3:1 (<module>)" in err


def test_pkg_tar_path_escaping_the_layer(ws):
    ws.write("p/f.txt", "x")
    ws.write("p/BUILD.pyimg", 'pkg_tar(name = "t", srcs = ["f.txt"], package_dir = "../etc")\n')
    err = _fails(ws, "//p:t")
    assert err.startswith("ERROR: p/BUILD.pyimg:1:1: pkg_tar //p:t:") and "escapes the layer" in err


def test_pkg_tar_source_outside_the_workspace(ws):
    ws.write("p/BUILD.pyimg", 'pkg_tar(name = "t", srcs = ["//../etc:passwd"])\n')
    assert "p/BUILD.pyimg:1" in _fails(ws, "//p:t")


def test_pkg_tar_two_files_one_path(ws):
    ws.write("p/a/f.txt", "a")
    ws.write("p/b/f.txt", "b")
    ws.write("p/BUILD.pyimg", 'pkg_tar(name = "t", srcs = ["a/f.txt", "b/f.txt"])\n')
    assert "two files map to the same path 'f.txt'" in _fails(ws, "//p:t")


@pytest.mark.parametrize("mode", ["0x644", "999", "rw-r--r--", ""])
def test_pkg_tar_mode_not_octal(ws, mode):
    ws.write("p/f.txt", "x")
    ws.write("p/BUILD.pyimg", f'pkg_tar(name = "t", srcs = ["f.txt"], modes = {{"f.txt": "{mode}"}})\n')
    assert "attribute 'modes' must be an octal string" in _fails(ws, "//p:t")


def _base_layout(ws):
    """An oci_layout pinned by digest, made by building an image in the same workspace."""
    ws.write("src/f.txt", "base file\n")
    ws.write("src/BUILD.pyimg", 'pkg_tar(name = "t", srcs = ["f.txt"])\noci_image(name = "img", tars = [":t"])\n')
    assert ws.run("build", "//src:img").code == 0
    import shutil

    shutil.copytree(ws.out("src/img"), ws.root / "base/layout")
    for p in (ws.root / "base/layout").rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return ws.out("src/img.digest").read_text().strip()


def test_oci_layout_digest_mismatch(ws):
    _base_layout(ws)
    wrong = "sha256:" + "ab" * 32
    ws.write("base/BUILD.pyimg", f'oci_layout(name = "b", path = "layout", digest = "{wrong}")\n')
    err = _fails(ws, "//base:b")
    assert err.startswith("ERROR: base/BUILD.pyimg:1:1: ") and wrong in err
    assert not ws.out("base/b").exists()


def test_oci_layout_corrupt_blob(ws):
    digest = _base_layout(ws)
    ws.write("base/BUILD.pyimg", f'oci_layout(name = "b", path = "layout", digest = "{digest}")\noci_image(name = "i", base = ":b")\n')
    assert ws.run("build", "//base:i").code == 0
    blobs = sorted((ws.root / "base/layout/blobs/sha256").iterdir(), key=lambda p: -p.stat().st_size)
    layer = blobs[0]
    data = bytearray(layer.read_bytes())
    data[len(data) // 2] ^= 0xFF
    layer.write_bytes(bytes(data))
    before = ws.out("base/i.digest").read_text()
    err = _fails(ws, "//base:i")
    assert layer.name in err
    # Nothing half-written: the previous outputs are intact.
    assert ws.out("base/i.digest").read_text() == before


def test_oci_layout_bad_digest_attribute(ws):
    ws.write("base/layout/index.json", "{}")
    ws.write("base/BUILD.pyimg", 'oci_layout(name = "b", path = "layout", digest = "latest")\n')
    assert "attribute 'digest' must be a sha256 digest" in _fails(ws, "//base:b")


def test_oci_layout_missing_directory_points_at_path(ws):
    ws.write("base/BUILD.pyimg", f"""
        oci_layout(
            name = "b",
            path = "nope",
            digest = "sha256:{"ab" * 32}",
        )
    """)
    err = _fails(ws, "//base:b")
    _at(err, "base/BUILD.pyimg:4:5")  # the `path` attribute, not the rule's glob
    assert "attribute 'path': no OCI layout at 'base/nope'" in err and "@pyimg" not in err


def test_oci_layout_wrong_digest_lists_what_index_json_names(ws):
    digest = _base_layout(ws)
    wrong = "sha256:" + "cd" * 32
    ws.write("base/BUILD.pyimg", f'oci_layout(name = "b", path = "layout", digest = "{wrong}")\n')
    err = _fails(ws, "//base:b")
    assert "neither in index.json nor a blob; index.json names:" in err
    assert f"{digest} (application/vnd.oci.image.manifest.v1+json, ref 'latest')" in err


@pytest.mark.parametrize("digest", ["ab" * 32, "sha256:" + "zz" * 32, "sha256:abc"])
def test_oci_layout_digest_without_sha256_points_at_the_attribute(ws, digest):
    ws.write("base/layout/index.json", "{}")
    ws.write("base/BUILD.pyimg", f'oci_layout(\n    name = "b",\n    path = "layout",\n    digest = "{digest}",\n)\n')
    err = _fails(ws, "//base:b")
    _at(err, "base/BUILD.pyimg:4:5")
    assert "attribute 'digest' must be a sha256 digest" in err
    # pyimg's own rule internals are not shown: the user cannot edit them.
    assert "oci.bzl" not in err and "fail(" not in err and len(err.strip().splitlines()) == 1


def test_fail_naming_an_attribute_in_a_user_rule_keeps_the_rule_line(ws):
    ws.write("p/defs.bzl", """
        def _impl(ctx):
            fail("attribute 'size' must be positive")
        r = rule(implementation = _impl, attrs = {"size": attr.int()})
    """)
    ws.write("p/BUILD.pyimg", 'load(":defs.bzl", "r")\nr(\n    name = "x",\n    size = -1,\n)\n')
    err = _fails(ws, "//p:x")
    _at(err, "p/BUILD.pyimg:4:5")
    assert "(in the rule implementation at p/defs.bzl:3:5)" in err


def test_missing_host_tool_points_at_its_path(ws):
    ws.write("p/BUILD.pyimg", """
        host_tool(
            name = "cc",
            path = "/nonexistent/cc",
        )
        genrule(name = "g", outs = ["g"], tools = [":cc"], cmd = "cc > $@")
    """)
    err = _fails(ws, "//p:g")
    _at(err, "p/BUILD.pyimg:4:5")
    assert "'/nonexistent/cc' does not exist on this machine (needed by Genrule //p:g" in err


def test_host_tool_removed_after_a_build_points_at_its_path(ws, tmp_path):
    tool = tmp_path / "bin/mytool"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n")
    ws.write("p/BUILD.pyimg", f"""
        host_tool(name = "t", path = "{tool}")
        genrule(name = "g", outs = ["g"], tools = [":t"], cmd = "echo made > $@")
    """)
    assert ws.run("build", "//p:g").code == 0
    tool.unlink()
    err = _fails(ws, "//p:g")  # the analysis comes from its cache now
    _at(err, "p/BUILD.pyimg:2:23")
    assert "does not exist on this machine" in err


def test_host_tool_path_must_be_absolute(ws):
    ws.write("p/BUILD.pyimg", 'host_tool(name = "cc", path = "gcc")\ngenrule(name = "g", outs = ["g"], tools = [":cc"], cmd = "x")\n')
    err = _fails(ws, "//p:g")
    _at(err, "p/BUILD.pyimg:1:24")
    assert "attribute 'path' must be an absolute path" in err


def test_module_load_error_says_where_once(ws):
    ws.write("MODULE.pyimg", '# inputs\n\nload("//:defs.bzl", "x")\n')
    ws.write("p/BUILD.pyimg", 'filegroup(name = "a")\n')
    err = _fails(ws, "//p:a")
    assert err.strip() == (
        "ERROR: MODULE.pyimg:3:1: load() of '//:defs.bzl': MODULE.pyimg declares external "
        "inputs only and cannot load files"
    )


@pytest.mark.parametrize(
    "attrs, where, message",
    [
        ('architecture = "aarch64"', "1:23", 'architecture \'aarch64\' is not an OCI architecture value (one of Go\'s GOARCH); did you mean "arm64"?'),
        ('architecture = "x86_64"', "1:23", 'did you mean "amd64"?'),
        ('architecture = "armhf"', "1:23", 'did you mean architecture = "arm", variant = "v7"?'),
        ('architecture = "i386"', "1:23", 'did you mean "386"?'),
        ('os = "Linux"', "1:23", 'did you mean "linux"?'),
        ('architecture = "arm", variant = "7"', "1:45", 'did you mean "v7"?'),
        ('architecture = "amd64", variant = "v8"', "1:47", "known: v1, v2, v3, v4"),
        ('architecture = "s390x", variant = "v1"', "1:47", "architecture 's390x' has no variants"),
    ],
)
def test_platform_values_are_checked(ws, attrs, where, message):
    ws.write("p/BUILD.pyimg", f'oci_image(name = "i", {attrs})\n')
    err = _fails(ws, "//p:i")
    _at(err, f"p/BUILD.pyimg:{where}")
    assert message in err


def test_oci_load_platform_is_checked(ws):
    ws.write("p/BUILD.pyimg", """
        oci_image(name = "i")
        oci_load(name = "l", image = ":i", platform = "linux/aarch64")
    """)
    err = _fails(ws, "//p:l")
    _at(err, "p/BUILD.pyimg:3:36")
    assert "attribute 'platform': architecture 'aarch64'" in err and 'did you mean "arm64"?' in err


def test_oci_load_of_an_index_without_the_platform(ws):
    ws.write("p/BUILD.pyimg", """
        oci_image(name = "a", architecture = "s390x")
        oci_image(name = "b", architecture = "ppc64le")
        oci_image_index(name = "idx", images = [":a", ":b"])
        oci_load(name = "l", image = ":idx", platform = "linux/riscv64")
    """)
    err = _fails_running(ws, "//p:l")
    _at(err, "p/BUILD.pyimg:5:1")
    assert "has no image for linux/riscv64; it has linux/ppc64le, linux/s390x" in err


def test_oci_load_of_an_image_of_another_platform_than_asked(ws):
    ws.write("p/BUILD.pyimg", """
        oci_image(name = "a", architecture = "s390x")
        oci_load(name = "l", image = ":a", platform = "linux/arm64")
    """)
    assert "platform is linux/arm64, but the image" in _fails_running(ws, "//p:l")
