"""Bad input exits 2 with one message that starts with the user's file:line:col, never a traceback."""

from __future__ import annotations

import pytest


def _fails(ws, *args, code=2):
    r = ws.run("build", *args)
    assert r.code == code, (r.code, r.err)
    assert "Traceback" not in r.err
    assert r.err.startswith("ERROR: "), r.err
    return r.err


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
