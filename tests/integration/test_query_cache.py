"""`pyimg query` serves packages from the loading cache, and its graph from graph.json, only while
they are valid."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from pyimg.loading import cache as loading_cache
from pyimg.loading import loader as loading

PUBLIC = 'visibility = ["//visibility:public"]'
QUERIES = [
    "//...",
    "deps(//app:app)",
    "rdeps(//..., //base:files)",
    "kind(genrule, //...)",
    "attr(cmd, cat, //...)",
    "buildfiles(//app:app)",
    "labels(srcs, //app:app)",
    "somepath(//app:app, //base:x.txt)",
]
OUTPUTS = ["label", "label_kind", "build", "json", "graph"]


@pytest.fixture
def cws(ws):
    ws.write("base/BUILD.pyimg", f'filegroup(name = "files", srcs = glob(["*.txt"]), {PUBLIC})\n')
    ws.write("base/x.txt", "x\n")
    ws.write("app/defs.bzl", 'CMD = "cat $(SRCS) > $@"\n')
    ws.write(
        "app/BUILD.pyimg",
        f"""
        load(":defs.bzl", "CMD")
        genrule(
            name = "app",
            srcs = select({{"//conditions:default": ["//base:files"], "//c:x": ["a.txt"]}}),
            outs = ["app.out"],
            cmd = CMD,
            {PUBLIC},
        )
        pkg_tar(name = "tar", files = {{":app": "/z", "a.txt": "/a"}}, package_dir = "/app")
    """,
    )
    ws.write("app/a.txt", "a\n")
    return ws


@pytest.fixture
def evaluations(monkeypatch):
    """The display names of the BUILD/.bzl files that loading evaluated (in-process)."""
    seen: list[str] = []
    real = loading.Loader._eval

    def counting(self, module_id, display, *args, **kwargs):
        seen.append(display)
        return real(self, module_id, display, *args, **kwargs)

    monkeypatch.setattr(loading.Loader, "_eval", counting)
    return seen


def q(ws, expr, *flags):
    r = ws.run("query", *flags, expr)
    assert r.code == 0, r.err
    return r.out


def _forget(ws):
    for d in ws.cache.glob("output_bases/*/loading"):
        shutil.rmtree(d)


def test_cached_results_are_identical(cws, evaluations):
    for expr in QUERIES:
        for output in OUTPUTS:
            _forget(cws)
            fresh = q(cws, expr, "--output", output)
            evaluations.clear()
            assert q(cws, expr, "--output", output) == fresh, (expr, output)
            assert not evaluations, (expr, output)  # served from the cache


def test_packages_added_to_the_cache_as_queries_reach_them(cws, evaluations):
    assert q(cws, "//base:files") == "//base:files\n"
    evaluations.clear()
    q(cws, "deps(//app:tar)")
    assert "app/BUILD.pyimg" in evaluations and "base/BUILD.pyimg" not in evaluations
    evaluations.clear()
    q(cws, "//...")
    assert not evaluations


def test_build_file_edit(cws, evaluations):
    assert q(cws, "//base:all") == "//base:files\n"
    cws.write("base/BUILD.pyimg", f'filegroup(name = "more", srcs = glob(["*.txt"]), {PUBLIC})\n')
    assert q(cws, "//base:all") == "//base:more\n"


def test_bzl_edit(cws):
    assert "cat $(SRCS)" in q(cws, "//app:app", "--output", "build")
    cws.write("app/defs.bzl", 'CMD = "tac $(SRCS) > $@"\n')
    assert "tac $(SRCS)" in q(cws, "//app:app", "--output", "build")


def test_new_file_matching_a_glob(cws):
    assert q(cws, "labels(srcs, //base:files)") == "//base:x.txt\n"
    cws.write("base/y.txt", "y\n")
    assert q(cws, "labels(srcs, //base:files)") == "//base:x.txt\n//base:y.txt\n"


def test_new_package_under_a_recursive_pattern(cws):
    before = q(cws, "//...")
    cws.write("new/BUILD.pyimg", 'genrule(name = "n", outs = ["n"], cmd = "true")\n')
    assert q(cws, "//...") == before + "//new:n\n"


def test_removed_package(cws):
    cws.write("old/BUILD.pyimg", 'genrule(name = "o", outs = ["o"], cmd = "true")\n')
    assert "//old:o" in q(cws, "//...")
    assert q(cws, "//old:o") == "//old:o\n"
    (cws.root / "old/BUILD.pyimg").unlink()
    assert "//old:o" not in q(cws, "//...")
    r = cws.run("query", "//old:o")
    assert r.code == 2 and "no such package 'old'" in r.err


def test_removed_source_file(cws):
    assert q(cws, "//app:a.txt") == "//app:a.txt\n"
    (cws.root / "app/a.txt").unlink()
    r = cws.run("query", "//app:a.txt")
    assert r.code == 2 and "no such target or file" in r.err


def test_corrupt_cache_is_ignored(cws):
    before = q(cws, "//...")
    for f in cws.cache.glob("output_bases/*/loading/packages.json"):
        f.write_text("{not json")
    assert q(cws, "//...") == before


# -- the persisted graph (loading/graph.json) ----------------------------------------------------

GRAPH_QUERIES = [
    "//...",
    "deps(//app:app)",
    "deps(//app:tar, 1)",
    "rdeps(//..., //base:x.txt)",
    "kind('source file', deps(//...))",
    "filter(x, deps(//...))",
    "somepath(//app:tar, //base:x.txt)",
    "allpaths(//app:tar, //base/...)",
]


@pytest.fixture
def loaders(monkeypatch):
    """The CachedLoaders that queries made (in-process): none when graph.json answers."""
    made: list[object] = []
    real = loading_cache.CachedLoader.__init__

    def counting(self, *args, **kwargs):
        made.append(self)
        real(self, *args, **kwargs)

    monkeypatch.setattr(loading_cache.CachedLoader, "__init__", counting)
    return made


def _graph_file(ws):
    (path,) = ws.cache.glob("output_bases/*/loading/graph.json")
    return path


def test_graph_answers_walks_without_loading(cws, loaders):
    for expr in GRAPH_QUERIES:
        for output in ["label", "label_kind", "graph"]:
            _forget(cws)
            fresh = q(cws, expr, "--output", output)
            loaders.clear()
            assert q(cws, expr, "--output", output) == fresh, (expr, output)
            assert not loaders, (expr, output)


def test_graph_holds_what_the_loading_cache_holds(cws, loaders):
    q(cws, "deps(//app:app)")
    graph = json.loads(_graph_file(cws).read_text())
    (packages_file,) = cws.cache.glob("output_bases/*/loading/packages.json")
    assert sorted(graph["packages"]) == ["app", "base"]
    assert set(graph["packages"]) <= set(json.loads(packages_file.read_text())["packages"])
    # A package the graph lacks comes from the loader, and joins the graph.
    cws.write(
        "new/BUILD.pyimg", 'genrule(name = "n", srcs = ["//app:tar"], outs = ["n"], cmd = "true")\n'
    )
    assert "//new:n\n" in q(cws, "rdeps(//..., //base:files)")
    loaders.clear()
    assert "//new:n\n" in q(cws, "rdeps(//..., //base:files)")
    assert not loaders
    assert sorted(json.loads(_graph_file(cws).read_text())["packages"]) == ["app", "base", "new"]


def test_graph_follows_build_and_bzl_edits(cws):
    assert "//base:x.txt" in q(cws, "deps(//app:app)")
    cws.write("app/defs.bzl", 'CMD = "true"\nSRCS = ["a.txt"]\n')
    cws.write(
        "app/BUILD.pyimg",
        """
        load(":defs.bzl", "CMD", "SRCS")
        genrule(name = "app", srcs = SRCS, outs = ["app.out"], cmd = CMD)
    """,
    )
    assert q(cws, "deps(//app:app)") == "//app:a.txt\n//app:app\n"
    cws.write("app/defs.bzl", 'CMD = "true"\nSRCS = ["//base:files"]\n')
    assert q(cws, "deps(//app:app)") == "//app:app\n//base:files\n//base:x.txt\n"


def test_touched_build_file_is_still_served(cws, loaders, evaluations):
    before = q(cws, "deps(//...)")
    build = cws.root / "base/BUILD.pyimg"
    st = build.stat()
    os.utime(build, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    loaders.clear()
    evaluations.clear()
    assert q(cws, "deps(//...)") == before
    assert not loaders and not evaluations  # the digest is the same: only re-hashed


@pytest.mark.parametrize("expr", ["deps(//app:tar)", "deps(//...)"])  # stat; the walk's listing
def test_removed_source_file_reached_by_deps(cws, expr):
    assert "//app:a.txt" in q(cws, expr)
    (cws.root / "app/a.txt").unlink()
    r = cws.run("query", expr)
    assert r.code == 2
    assert "app/BUILD.pyimg:" in r.err and "no such target or file '//app:a.txt'" in r.err


@pytest.mark.parametrize("damage", ["garbage", "dependency out of range", "target out of range"])
def test_corrupt_graph_is_ignored_and_rebuilt(cws, loaders, damage):
    before = q(cws, "deps(//...)")
    path = _graph_file(cws)
    if damage == "garbage":
        path.write_text("{not json")
    else:
        data = json.loads(path.read_text())
        if damage == "dependency out of range":
            data["deps"][0] = [len(data["labels"])]
        else:
            data["packages"]["app"] = [-1]
        path.write_text(json.dumps(data))
    assert q(cws, "deps(//...)") == before
    loaders.clear()
    assert q(cws, "deps(//...)") == before
    assert not loaders  # rebuilt by the query that ignored it
