"""`pyimg query`: every operator and output format on one fixture workspace, and its errors."""

from __future__ import annotations

import json

import pytest
from pyimg.core.errors import UsageError
from pyimg.starlark.query import BinOp, Call, Let, SetOf, Var, Word, parse_query

PUBLIC = 'visibility = ["//visibility:public"]'


@pytest.fixture
def qws(ws):
    """base <- lib <- app, with a select(), a label-keyed dict, a macro from a .bzl, and a
    package (`other`) that nothing depends on."""
    ws.write(
        "base/BUILD.pyimg",
        f"""
        filegroup(name = "files", srcs = ["x.txt", "y.txt"], {PUBLIC})
        host_tool(name = "sh", path = "/bin/sh", {PUBLIC})
    """,
    )
    ws.write("base/x.txt", "x\n")
    ws.write("base/y.txt", "y\n")
    ws.write(
        "lib/BUILD.pyimg",
        f"""
        genrule(
            name = "gen",
            srcs = ["//base:files"],
            outs = ["gen.out"],
            cmd = "cat $(SRCS) > $@",
            tools = ["//base:sh"],
            {PUBLIC},
        )
        pkg_tar(name = "tar", files = {{":gen": "/gen", "n.txt": "/n"}}, package_dir = "/lib", {PUBLIC})
    """,
    )
    ws.write("lib/n.txt", "n\n")
    ws.write(
        "app/defs.bzl",
        """
        load("@pyimg//rules:defs.bzl", "genrule")

        def copy(name, src):
            genrule(name = name, srcs = [src], outs = [name + ".out"], cmd = "cp $< $@")
    """,
    )
    ws.write(
        "app/BUILD.pyimg",
        """
        load("//app:defs.bzl", "copy")
        copy(name = "copied", src = "//lib:tar")
        genrule(
            name = "app",
            srcs = select({
                "//conditions:default": ["a.txt", ":copied"],
                "//cond:arm64": ["b.txt", ":copied"],
            }),
            outs = ["app.out"],
            cmd = "cat $(SRCS) > $@",
        )
    """,
    )
    ws.write("app/a.txt", "a\n")
    ws.write("app/b.txt", "b\n")
    ws.write("other/BUILD.pyimg", 'genrule(name = "lone", srcs = [], outs = ["o"], cmd = "true")\n')
    return ws


def q(ws, expr, *flags):
    r = ws.run("query", *flags, expr)
    assert r.code == 0, r.err
    return r.out.splitlines()


ALL_RULES = [
    "//app:app",
    "//app:copied",
    "//base:files",
    "//base:sh",
    "//lib:gen",
    "//lib:tar",
    "//other:lone",
]
APP_DEPS = [
    "//app:a.txt",
    "//app:app",
    "//app:b.txt",
    "//app:copied",
    "//base:files",
    "//base:sh",
    "//base:x.txt",
    "//base:y.txt",
    "//lib:gen",
    "//lib:n.txt",
    "//lib:tar",
]


# -- target patterns ---------------------------------------------------------------------------


def test_patterns(qws):
    assert q(qws, "//...") == ALL_RULES
    assert q(qws, "//lib/...") == ["//lib:gen", "//lib:tar"]
    assert q(qws, "//base:all") == ["//base:files", "//base:sh"]
    assert q(qws, "//lib:gen") == ["//lib:gen"]
    assert q(qws, "//base:x.txt") == ["//base:x.txt"]
    r = qws.run("query", ":tar", cwd=qws.root / "lib")
    assert r.out.splitlines() == ["//lib:tar"]


def test_unknown_target_and_package(qws):
    r = qws.run("query", "//lib:gne")
    assert r.code == 2 and "did you mean ':gen'" in r.err
    r = qws.run("query", "//nope:x")
    assert r.code == 2 and "no such package 'nope'" in r.err


# -- functions ---------------------------------------------------------------------------------


def test_deps(qws):
    assert q(qws, "deps(//app:app)") == APP_DEPS
    assert q(qws, "deps(//app:app, 0)") == ["//app:app"]
    assert q(qws, "deps(//app:app, 1)") == [
        "//app:a.txt",
        "//app:app",
        "//app:b.txt",
        "//app:copied",
    ]
    assert q(qws, "deps(//lib:tar, 1)") == ["//lib:gen", "//lib:n.txt", "//lib:tar"]


def test_rdeps(qws):
    assert q(qws, "rdeps(//..., //base:x.txt)") == [
        "//app:app",
        "//app:copied",
        "//base:files",
        "//base:x.txt",
        "//lib:gen",
        "//lib:tar",
    ]
    assert q(qws, "rdeps(//..., //base:x.txt, 1)") == ["//base:files", "//base:x.txt"]
    assert q(qws, "rdeps(//lib/..., //base:sh)") == ["//base:sh", "//lib:gen", "//lib:tar"]
    assert q(qws, "rdeps(//other/..., //base:sh)") == []


def test_kind(qws):
    assert q(qws, "kind(genrule, //...)") == [
        "//app:app",
        "//app:copied",
        "//lib:gen",
        "//other:lone",
    ]
    assert q(qws, 'kind("source file", deps(//lib:tar))') == [
        "//base:x.txt",
        "//base:y.txt",
        "//lib:n.txt",
    ]
    assert q(qws, "kind('^(filegroup|pkg_tar)$', //...)") == ["//base:files", "//lib:tar"]


def test_attr(qws):
    assert q(qws, "attr(cmd, 'cp ', //...)") == ["//app:copied"]
    assert q(qws, "attr(package_dir, '^/lib$', //...)") == ["//lib:tar"]
    assert q(qws, "attr(srcs, 'b.txt', //...)") == ["//app:app"]  # any select() branch
    assert q(qws, "attr(tools, '//base:sh', //...)") == ["//lib:gen"]


def test_filter(qws):
    assert q(qws, "filter('\\.txt$', deps(//app:app))") == [
        "//app:a.txt",
        "//app:b.txt",
        "//base:x.txt",
        "//base:y.txt",
        "//lib:n.txt",
    ]
    assert q(qws, "filter(//lib, //...)") == ["//lib:gen", "//lib:tar"]


def test_somepath_and_allpaths(qws):
    # A path prints in path order, from the start to the end, as Bazel prints it.
    path = ["//app:app", "//app:copied", "//lib:tar", "//lib:gen", "//base:files", "//base:x.txt"]
    assert q(qws, "somepath(//app:app, //base:x.txt)") == path
    r = qws.run("query", "somepath(//app:app, //base:x.txt)", "--output", "label_kind")
    assert [line.split()[-1] for line in r.out.splitlines()] == path
    # Anything else stays sorted by label, a path inside a larger expression too.
    assert q(qws, "somepath(//app:app, //base:x.txt) union //other:lone") == sorted([*path, "//other:lone"])
    assert q(qws, "somepath(//app:app, //other:lone)") == []
    assert q(qws, "allpaths(//app:app, //lib:gen)") == [
        "//app:app",
        "//app:copied",
        "//lib:gen",
        "//lib:tar",
    ]
    # //base/... names rules only, so the source files below them are on no path
    assert q(qws, "allpaths(//lib:tar, //base/...)") == [
        "//base:files",
        "//base:sh",
        "//lib:gen",
        "//lib:tar",
    ]


def test_labels(qws):
    assert q(qws, "labels(files, //lib:tar)") == ["//lib:gen", "//lib:n.txt"]
    assert q(qws, "labels(srcs, //app:app)") == ["//app:a.txt", "//app:b.txt", "//app:copied"]
    assert q(qws, "labels(cmd, //app:app)") == []


def test_buildfiles(qws):
    assert q(qws, "buildfiles(//app:copied)") == ["//app:BUILD.pyimg", "//app:defs.bzl"]
    assert q(qws, "buildfiles(deps(//lib:gen))") == ["//base:BUILD.pyimg", "//lib:BUILD.pyimg"]


def test_set_let_and_operators(qws):
    assert q(qws, "set(//lib:gen //base:sh)") == ["//base:sh", "//lib:gen"]
    assert q(qws, "set()") == []
    assert q(qws, "let t = //lib:tar in deps($t, 1) - $t") == ["//lib:gen", "//lib:n.txt"]
    assert q(qws, "//lib/... + //base:sh") == ["//base:sh", "//lib:gen", "//lib:tar"]
    assert q(qws, "//lib/... union //base:sh") == ["//base:sh", "//lib:gen", "//lib:tar"]
    assert q(qws, "//... - //app/...") == [
        "//base:files",
        "//base:sh",
        "//lib:gen",
        "//lib:tar",
        "//other:lone",
    ]
    assert q(qws, "//... except kind(genrule, //...)") == ["//base:files", "//base:sh", "//lib:tar"]
    assert q(qws, "deps(//lib:tar) ^ //base/...") == ["//base:files", "//base:sh"]
    assert q(qws, "deps(//lib:tar) intersect deps(//app:copied, 1)") == ["//lib:tar"]
    # left-associative, one precedence level; parentheses regroup
    assert q(qws, "//lib/... - //lib:gen + //lib:gen") == ["//lib:gen", "//lib:tar"]
    assert q(qws, "//lib/... - (//lib:gen + //lib:gen)") == ["//lib:tar"]


# -- output formats ----------------------------------------------------------------------------


def test_output_label_kind(qws):
    assert q(qws, "deps(//lib:tar, 1)", "--output", "label_kind") == [
        "genrule rule //lib:gen",
        "source file //lib:n.txt",
        "pkg_tar rule //lib:tar",
    ]


def test_output_build(qws):
    out = "\n".join(q(qws, "//lib:gen + //base:x.txt", "--output", "build"))
    assert out.startswith("# //base:x.txt (source file)\n\n# lib/BUILD.pyimg:2:1\ngenrule(\n")
    assert '    name = "gen",' in out
    assert '    srcs = ["//base:files"],' in out
    assert '    cmd = "cat $(SRCS) > $@",' in out
    assert out.endswith(")")
    sel = "\n".join(q(qws, "//app:app", "--output", "build"))
    assert 'srcs = select({"//conditions:default": ["//app:a.txt", "//app:copied"]' in sel


def test_output_json(qws):
    r = qws.run("query", "--output", "json", "deps(//lib:tar, 1)")
    data = json.loads(r.out)
    assert [t["label"] for t in data["targets"]] == ["//lib:gen", "//lib:n.txt", "//lib:tar"]
    tar = data["targets"][2]
    assert tar["kind"] == "pkg_tar" and tar["origin"] == "lib/BUILD.pyimg:10:1"
    assert tar["deps"] == ["//lib:gen", "//lib:n.txt"]
    assert tar["attrs"]["files"] == {"//lib:gen": "/gen", "//lib:n.txt": "/n"}
    assert data["targets"][1] == {"label": "//lib:n.txt", "kind": "source file", "deps": []}


def test_output_graph(qws):
    out = q(qws, "deps(//lib:tar, 1)", "--output", "graph")
    assert out == [
        'digraph "pyimg query" {',
        "  node [shape=box];",
        '  "//lib:gen";',
        '  "//lib:n.txt";',
        '  "//lib:tar";',
        '  "//lib:tar" -> "//lib:gen";',
        '  "//lib:tar" -> "//lib:n.txt";',
        "}",
    ]


def test_empty_result_says_so(qws):
    r = qws.run("query", "kind(oci_image, //...)")
    assert r.code == 0 and r.out == "" and "Empty query results" in r.err


# -- errors ------------------------------------------------------------------------------------


def test_syntax_error_points_at_column(qws):
    r = qws.run("query", "deps(//lib:gen))")
    assert r.code == 2
    assert "column 16" in r.err
    lines = r.err.splitlines()
    assert lines[-2] == "  deps(//lib:gen))"
    assert lines[-1] == "  " + " " * 15 + "^"
    r = qws.run("query", "deps(//lib:gen")
    assert (
        r.code == 2
        and "unexpected end" in r.err
        and r.err.splitlines()[-1] == "  " + " " * 14 + "^"
    )
    r = qws.run("query", "//a + + //b")
    assert r.code == 2 and "column 7" in r.err


def test_unknown_function_suggests(qws):
    r = qws.run("query", "//... - rdep(//..., //lib:gen)")
    assert r.code == 2
    assert "unknown function 'rdep' at column 9 (did you mean 'rdeps'?)" in r.err
    assert r.err.splitlines()[-1] == "  " + " " * 8 + "^"
    r = qws.run("query", "somepaths(//a, //b)")
    assert "did you mean 'somepath'?" in r.err


def test_bad_arguments(qws):
    r = qws.run("query", "deps(//lib:gen, x)")
    assert r.code == 2 and "depth must be a non-negative integer" in r.err
    r = qws.run("query", "kind(//...)")
    assert r.code == 2 and "kind() takes 2 arguments, got 1" in r.err
    r = qws.run("query", "let v = //lib:gen in $w")
    assert r.code == 2 and "undefined variable '$w'" in r.err
    r = qws.run("query", "kind('(', //...)")
    assert r.code == 2 and "bad regular expression" in r.err


def test_parse_tree_shapes():
    assert parse_query("//a:b-c") == Word(1, "//a:b-c")
    e = parse_query("a - b intersect c")
    assert isinstance(e, BinOp) and e.op == "intersect" and isinstance(e.left, BinOp)
    e = parse_query("let x = set(a b) in $x ^ deps($x, 2)")
    assert isinstance(e, Let) and isinstance(e.value, SetOf)
    assert isinstance(e.body, BinOp) and isinstance(e.body.left, Var)
    assert isinstance(e.body.right, Call) and e.body.right.args[1] == Word(35, "2")
    with pytest.raises(UsageError):
        parse_query("   ")


def test_syntax_trees_are_kept_between_processes(tmp_path, monkeypatch):
    import pyimg.starlark.query as query

    text = 'let v = deps(//app:image, 2) in $v - set(//a:b "//c:d") ^ kind("genrule", //...)'
    first = parse_query(text, tmp_path)
    monkeypatch.setattr(query, "_parse", lambda *a: pytest.fail("parsed again"))
    assert parse_query(text, tmp_path) == first  # from the file: no lark, same tree

    monkeypatch.undo()
    (cache,) = tmp_path.glob("query-parses-*.json")
    entries = json.loads(cache.read_text())
    entries[0][1][0] = "Var"  # a damaged tree fails its checksum: parsed again, correctly
    cache.write_text(json.dumps(entries))
    assert parse_query(text, tmp_path) == first
    cache.write_text("garbage")
    assert parse_query(text, tmp_path) == first

    for i in range(query._ParseCache.KEEP + 5):  # the most recent expressions only
        parse_query(f"//p:t{i}", tmp_path)
    assert len(json.loads(cache.read_text())) == query._ParseCache.KEEP
    with pytest.raises(UsageError, match="unexpected end"):  # errors are never kept
        parse_query("deps(", tmp_path)
    with pytest.raises(UsageError, match="unexpected end"):
        parse_query("deps(", tmp_path)
