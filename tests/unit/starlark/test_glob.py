import os

import pytest
from pyimg.core.errors import SourceLinkError, UserInputError
from pyimg.starlark.inputs import glob_package


def _ws(tmp_path, files):
    for f in files:
        p = tmp_path / f
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    return tmp_path


def _build_file(root):
    def find(pkg):
        for n in ("BUILD.pyimg", "BUILD"):
            if (root / pkg / n).is_file():
                return root / pkg / n
        return None

    return find


def test_glob_is_sorted_and_stops_at_subpackages(tmp_path):
    root = _ws(tmp_path, ["p/BUILD", "p/b.txt", "p/a.txt", "p/d/x.txt", "p/d/y.md",
                          "p/sub/BUILD", "p/sub/z.txt", "p/pyimg-out/o.txt"])
    got = glob_package(root, "p", ["**/*.txt"], [], _build_file(root))
    assert got == ["a.txt", "b.txt", "d/x.txt"]


def test_glob_exclude_and_star(tmp_path):
    root = _ws(tmp_path, ["p/BUILD", "p/a.txt", "p/a_test.txt", "p/d/x.txt"])
    assert glob_package(root, "p", ["*.txt"], ["*_test.txt"], _build_file(root)) == ["a.txt"]
    assert glob_package(root, "p", ["d/**"], [], _build_file(root)) == ["d/x.txt"]


def test_literal_prefix_limits_the_walk_but_not_the_result(tmp_path):
    root = _ws(tmp_path, ["p/BUILD", "p/a/x.txt", "p/a/b/y.txt", "p/c/z.txt", "p/a/sub/BUILD",
                          "p/a/sub/w.txt", "p/top.txt"])
    find = _build_file(root)
    assert glob_package(root, "p", ["a/**"], [], find) == ["a/b/y.txt", "a/x.txt"]
    assert glob_package(root, "p", ["a/**", "c/*.txt"], ["a/b/*"], find) == ["a/x.txt", "c/z.txt"]
    assert glob_package(root, "p", ["a/sub/*.txt"], [], find) == []  # a subpackage's files
    assert glob_package(root, "p", ["a/*.txt", "**/*.txt"], [], find) == [
        "a/b/y.txt", "a/x.txt", "c/z.txt", "top.txt"]
    assert glob_package(root, "p", ["missing/**"], [], find) == []


def test_directory_links_inside_the_workspace_are_walked_as_in_bazel(tmp_path):
    root = _ws(tmp_path, ["p/BUILD", "p/a.txt", "site/www/i.html", "q/BUILD", "q/x.txt"])
    os.symlink("../site", root / "p/web")
    os.symlink("../q", root / "p/other")  # a package: its files are not p's
    os.symlink("a.txt", root / "p/b.txt")
    _ws(root, ["pyimg-out/p/o.txt", ".git/objects/x"])
    os.symlink("../pyimg-out", root / "p/out")  # never walked by name, nor through a link
    os.symlink("../.git", root / "p/git")
    assert glob_package(root, "p", ["**"], [], _build_file(root)) == [
        "a.txt", "b.txt", "web/www/i.html"]


def test_only_directories_a_pattern_can_match_below_are_walked(tmp_path):
    root = _ws(tmp_path / "ws", ["p/BUILD", "p/a.txt", "p/d/x.txt", "p/d/e/y.txt"])
    os.symlink(tmp_path / "elsewhere", root / "p/gone")  # a dangling link no pattern matches
    os.symlink(tmp_path, root / "p/d/up")  # leaves the workspace, below what is matched
    find = _build_file(root)
    assert glob_package(root, "p", ["*.txt"], [], find) == ["a.txt"]
    assert glob_package(root, "p", ["d/*.txt", "d/e/*"], [], find) == ["d/e/y.txt", "d/x.txt"]
    assert glob_package(root, "p", ["*/e/*.txt"], [], find) == ["d/e/y.txt"]
    with pytest.raises(SourceLinkError, match="'p/d/up' is a symlink to .*, outside the workspace"):
        glob_package(root, "p", ["d/**/*.txt"], [], find)


@pytest.mark.parametrize(("link", "message"), [
    ("../../..", "'p/d/loop' is a symlink to '../../..' (resolved: "),
    (".", "'p/d/loop' is a symlink to '.', a directory that contains it (a symlink loop)"),
    ("loop", "'p/d/loop' is a symlink to 'loop', which never resolves (a symlink loop)"),
    ("nowhere", "'p/d/loop' is a symlink to 'nowhere', which does not exist"),
])
def test_links_that_leave_dangle_or_loop_are_refused(tmp_path, link, message):
    root = _ws(tmp_path / "ws", ["p/BUILD", "p/d/x.txt"])
    os.symlink(link, root / "p/d/loop")
    with pytest.raises(SourceLinkError) as e:
        glob_package(root, "p", ["**"], [], _build_file(root))
    assert e.value.message.startswith(message)


def test_a_link_to_the_root_reaches_the_package_only_as_a_subpackage(tmp_path):
    root = _ws(tmp_path / "ws", ["p/BUILD", "p/d/x.txt", "top.txt"])
    os.symlink("../..", root / "p/d/root")
    assert glob_package(root, "p", ["**"], [], _build_file(root)) == ["d/root/top.txt", "d/x.txt"]


NAMES = ["has space.txt", "données-ñ-日本語.txt", "x+@=,~#!$&'();[].txt", "@scope.txt",
         "File::Spec.3pm", "d i r/ü.txt"]


def test_glob_returns_any_utf8_name(tmp_path):
    root = _ws(tmp_path, ["p/BUILD", *(f"p/{n}" for n in NAMES)])
    got = glob_package(root, "p", ["**"], [], _build_file(root))
    assert got == sorted(NAMES)


def test_a_name_with_a_newline_is_refused_not_skipped(tmp_path):
    root = _ws(tmp_path, ["p/BUILD", "p/d/new\nline.txt"])
    with pytest.raises(UserInputError, match=r"directory p/d .*control character U\+000A"):
        glob_package(root, "p", ["**"], [], _build_file(root))
    assert glob_package(root, "p", ["**"], ["d/*"], _build_file(root)) == []


def test_a_name_that_is_not_utf8_is_refused_naming_its_directory_and_bytes(tmp_path):
    root = _ws(tmp_path, ["p/BUILD", "p/d/ok.txt"])
    (tmp_path / os.fsdecode(b"p/d/caf\xe9.txt")).write_text("x")
    (tmp_path / os.fsdecode(b"p/e\xff")).mkdir()
    (tmp_path / os.fsdecode(b"p/e\xff/f.txt")).write_text("x")
    with pytest.raises(UserInputError) as e:
        glob_package(root, "p", ["d/*"], [], _build_file(root))
    assert "the name 'caf\\xe9.txt' in directory p/d is not valid UTF-8" in e.value.message
    with pytest.raises(UserInputError) as e:
        glob_package(root, "p", ["e*/*"], [], _build_file(root))
    assert "the name 'e\\xff' in directory p is not valid UTF-8" in e.value.message
    # Excluded, it is no error: the rest of the tree still packs.
    assert glob_package(root, "p", ["**"], ["d/caf*", "e*/**"], _build_file(root)) == ["d/ok.txt"]
