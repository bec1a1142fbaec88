"""User-defined rules, providers and macros in .bzl files behave as in Bazel
(docs/concepts.md, "Rules, targets, providers")."""

from __future__ import annotations

DEFS = '''
"""Rules of the test workspace."""

VersionInfo = provider(doc = "A version.", fields = ["version", "file"])

def _version_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name + ".txt")
    ctx.actions.write(out, ctx.attr.version + "\\n")
    return [DefaultInfo(files = [out]), VersionInfo(version = ctx.attr.version, file = out)]

version_file = rule(
    implementation = _version_impl,
    attrs = {"version": attr.string(mandatory = True)},
)

def _stamp_impl(ctx):
    info = ctx.attr.version[VersionInfo]
    out = ctx.actions.declare_file(ctx.label.name + ".out")
    script = ctx.file.script
    ctx.actions.run(
        executable = script,
        arguments = [info.file.path, out.path, str(ctx.attr.copies)] + ctx.attr.extra,
        inputs = [info.file] + ctx.files.data,
        outputs = [out],
        env = {"STAMP": "yes" if ctx.attr.loud else "no"},
        mnemonic = "Stamp",
        progress_message = "Stamping %s" % str(ctx.label),
    )
    return [DefaultInfo(files = [out])]

_stamp = rule(
    implementation = _stamp_impl,
    attrs = {
        "version": attr.label(mandatory = True, providers = [VersionInfo]),
        "script": attr.label(allow_single_file = True, mandatory = True),
        "data": attr.label_list(allow_files = True),
        "copies": attr.int(default = 1),
        "loud": attr.bool(),
        "extra": attr.string_list(),
    },
)

def stamp(name, **kwargs):
    """A macro around a private rule, as rules_oci does."""
    _stamp(name = name, extra = ["--from-macro"], **kwargs)
'''

SCRIPT = '''#!/bin/sh
set -e
for i in $(seq "$3"); do cat "$1"; done > "$2"
echo "STAMP=$STAMP $4" >> "$2"
'''


def _workspace(ws):
    ws.write("tools/defs.bzl", DEFS)
    ws.write("tools/BUILD.pyimg", "")
    ws.write("app/stamp.sh", SCRIPT, mode=0o755)
    ws.write("app/BUILD.pyimg", '''
        load("//tools:defs.bzl", "stamp", "version_file")

        version_file(name = "v", version = "1.2.3")

        stamp(name = "s", version = ":v", script = "stamp.sh", copies = 2, loud = True)
    ''')


def test_rule_provider_macro_and_run(ws):
    _workspace(ws)
    r = ws.run("build", "//app:s")
    assert r.code == 0, r.err
    assert ws.out("app/s.out").read_text() == "1.2.3\n1.2.3\nSTAMP=yes --from-macro\n"
    assert ws.run("build", "//app:s").err.count("0 actions run") == 1


def test_mandatory_and_types_are_checked(ws):
    _workspace(ws)
    ws.write("app/BUILD.pyimg", '''
        load("//tools:defs.bzl", "stamp")
        stamp(name = "s", script = "stamp.sh", copies = "two")
    ''')
    r = ws.run("build", "//app:s")
    assert r.code == 2
    assert "app/BUILD.pyimg:3" in r.err
    assert "attribute 'copies' must be an integer" in r.err or "missing mandatory attribute 'version'" in r.err


def test_single_file_attribute_must_be_one_file(ws):
    _workspace(ws)
    ws.write("app/BUILD.pyimg", '''
        load("//tools:defs.bzl", "stamp", "version_file")
        version_file(name = "v", version = "1")
        filegroup(name = "two", srcs = ["stamp.sh", "BUILD.pyimg"])
        stamp(name = "s", version = ":v", script = ":two")
    ''')
    r = ws.run("build", "//app:s")
    assert r.code == 2 and "attribute 'script' must name exactly one file" in r.err


def test_rule_must_be_assigned_to_a_top_level_name(ws):
    ws.write("tools/defs.bzl", '''
def _impl(ctx):
    return []

RULES = [rule(implementation = _impl)]
''')
    ws.write("tools/BUILD.pyimg", 'load(":defs.bzl", "RULES")\n')
    r = ws.run("build", "//tools:all")
    assert r.code == 2 and "rule() must be assigned to a top-level name" in r.err
    assert "tools/defs.bzl:5" in r.err


def test_fail_in_implementation_names_target_and_rule_line(ws):
    ws.write("tools/defs.bzl", '''
def _impl(ctx):
    fail("attribute 'flavor' must be sweet, got " + ctx.attr.flavor)

candy = rule(implementation = _impl, attrs = {"flavor": attr.string()})
''')
    ws.write("tools/BUILD.pyimg", 'load(":defs.bzl", "candy")\n\ncandy(name = "c", flavor = "sour")\n')
    r = ws.run("build", "//tools:c")
    assert r.code == 2
    # At the attribute the message names (where the user fixes it), then where the rule failed.
    assert r.err.startswith("ERROR: tools/BUILD.pyimg:3:19: candy //tools:c: attribute 'flavor' must be sweet, got sour")
    assert "tools/defs.bzl:3" in r.err


def test_select_on_architecture(ws):
    ws.write("p/BUILD.pyimg", '''
        genrule(
            name = "arch",
            outs = ["arch.txt"],
            cmd = select({
                "@pyimg//platforms:arm64": "echo arm > $@",
                "//conditions:default": "echo default > $@",
            }),
        )
    ''')
    r = ws.run("build", "//p:arch")
    assert r.code == 0, r.err
    assert ws.out("p/arch.txt").read_text() == "default\n"


def test_glob_in_macro_and_native(ws):
    ws.write("tools/defs.bzl", '''
def files_of(name, pattern):
    filegroup(name = name, srcs = native.glob([pattern]))
''')
    ws.write("tools/BUILD.pyimg", "")
    ws.write("p/a.txt", "a")
    ws.write("p/b.txt", "b")
    ws.write("p/BUILD.pyimg", '''
        load("//tools:defs.bzl", "files_of")
        files_of(name = "txt", pattern = "*.txt")
        genrule(name = "cat", srcs = [":txt"], outs = ["cat.out"], cmd = "cat $(SRCS) > $@")
    ''')
    # As in Bazel, a .bzl file sees rules only through load().
    r = ws.run("build", "//p:cat")
    assert r.code == 2 and "tools/defs.bzl:3" in r.err and "filegroup" in r.err
    ws.write("tools/defs.bzl", '''
load("@pyimg//rules:defs.bzl", "filegroup")

def files_of(name, pattern):
    filegroup(name = name, srcs = native.glob([pattern]))
''')
    r = ws.run("build", "//p:cat")
    assert r.code == 0, r.err
    assert ws.out("p/cat.out").read_text() == "ab"


BAZEL_API_DEFS = '''
"""Rules written as a Bazel user writes them."""

load("@pyimg//rules:defs.bzl", "OciImageInfo", "OciPushInfo")

def _describe_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name + ".txt")
    lines = [
        "self=" + str(ctx.label),
        "fields=%s|%s|%s|%s" % (ctx.label.name, ctx.label.package, ctx.label.workspace_name, ctx.label.repo_name),
        "label=" + str(Label("//app:img")) + " " + Label("//app:img").name,
        "push_info=" + str(OciPushInfo in ctx.attr.push),
        "image=%s %s" % (ctx.attr.image.label, OciImageInfo in ctx.attr.image),
        "image_name=" + ctx.attr.image.label.name,
        "legacy=" + ctx.attr.image["label"],
    ]
    for target in ctx.attr.srcs:
        lines.append("src=%s %s" % (target.label, [f.basename for f in target[DefaultInfo].files.to_list()]))
    for target, path in ctx.attr.files.items():
        lines.append("file=%s -> %s" % (target.label, path))
    lines.append("keys=%s values=%s" % ([str(t.label) for t in ctx.attr.files.keys()], ctx.attr.files.values()))
    all_files = depset(ctx.files.srcs, transitive = [ctx.files.srcs])
    lines.append("depset=%d" % len(all_files.to_list()))
    ctx.actions.write(out, "\\n".join(lines) + "\\n")
    return [DefaultInfo(files = depset([out]))]

describe = rule(
    implementation = _describe_impl,
    attrs = {
        "image": attr.label(),
        "push": attr.label(),
        "srcs": attr.label_list(allow_files = True),
        "files": attr.label_keyed_string_dict(allow_files = True),
    },
)
'''


def test_bazel_target_and_label_api(ws):
    """`target.label`, `str(ctx.label)` and Label's fields, a label_keyed_string_dict read with
    items(), keys() and values(), depset().to_list(), and OciPushInfo from defs.bzl."""
    ws.write("tools/defs.bzl", BAZEL_API_DEFS)
    ws.write("tools/BUILD.pyimg", "")
    ws.write("app/a.txt", "a")
    ws.write("app/b.txt", "b")
    ws.write("app/BUILD.pyimg", '''
        load("//tools:defs.bzl", "describe")

        oci_image(name = "img", entrypoint = ["/x"])

        oci_push(name = "push", image = ":img", repository = "localhost/app")

        describe(
            name = "d",
            image = ":img",
            push = ":push",
            srcs = ["a.txt", "b.txt"],
            files = {"a.txt": "/etc/a", ":b.txt": "/etc/b"},
        )
    ''')
    r = ws.run("build", "//app:d")
    assert r.code == 0, r.err
    assert ws.out("app/d.txt").read_text().splitlines() == [
        "self=//app:d",
        "fields=d|app||",
        "label=//app:img img",
        "push_info=True",
        "image=//app:img True",
        "image_name=img",
        "legacy=//app:img",
        "src=//app:a.txt [\"a.txt\"]",
        "src=//app:b.txt [\"b.txt\"]",
        "file=//app:a.txt -> /etc/a",
        "file=//app:b.txt -> /etc/b",
        'keys=["//app:a.txt", "//app:b.txt"] values=["/etc/a", "/etc/b"]',
        "depset=2",
    ]


def test_label_field_error_points_at_the_user_line(ws):
    """A field a value does not have is reported at the user's line and column, even though
    pyimg reads `.name` through a helper."""
    ws.write("tools/defs.bzl", '''
def _impl(ctx):
    x = struct(a = 1)
    return [DefaultInfo(files = []), x.name]

bad = rule(implementation = _impl)
''')
    ws.write("tools/BUILD.pyimg", "")
    ws.write("app/BUILD.pyimg", 'load("//tools:defs.bzl", "bad")\nbad(name = "b")\n')
    r = ws.run("build", "//app:b")
    assert r.code == 2, r.err
    assert "`.name` not supported on type `struct`" in r.err, r.err
    assert "(in the rule implementation at tools/defs.bzl:4:38)" in r.err, r.err
    assert "prelude" not in r.err, r.err
