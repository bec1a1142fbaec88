"""Finding packages and BUILD files: what counts as a package, and where the search never goes."""

from __future__ import annotations

import os

from pyimg.loading.inputs import find_build_file, find_packages


def _touch(root, *files):
    for f in files:
        p = root / f
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("")


def test_find_packages_sorted_and_pruned(tmp_path):
    _touch(tmp_path, "BUILD.pyimg", "b/BUILD", "a/BUILD.pyimg", "a/x/y/BUILD", "a/x/z.txt",
           "pyimg-out/p/BUILD", ".hidden/BUILD", "node_modules/m/BUILD")  # fmt: skip
    assert find_packages(tmp_path) == ["", "a", "a/x/y", "b"]
    assert find_packages(tmp_path, "a") == ["a", "a/x/y"]
    assert find_packages(tmp_path, "a/x") == ["a/x/y"]
    assert find_packages(tmp_path, "missing") == []


def test_only_a_file_makes_a_package(tmp_path):
    (tmp_path / "dir_named_build/BUILD").mkdir(parents=True)
    (tmp_path / "dangling").mkdir()
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling/BUILD.pyimg")
    _touch(tmp_path, "real/target.txt")
    (tmp_path / "linked").mkdir()
    os.symlink(tmp_path / "real/target.txt", tmp_path / "linked/BUILD")
    assert find_packages(tmp_path) == ["linked"]
    assert find_build_file(tmp_path, "dangling") is None
    assert find_build_file(tmp_path, "linked") == str(tmp_path / "linked/BUILD")


def test_directory_symlinks_are_not_followed(tmp_path):
    _touch(tmp_path, "real/BUILD")
    os.symlink(tmp_path / "real", tmp_path / "alias")
    assert find_packages(tmp_path) == ["real"]


def test_build_pyimg_wins(tmp_path):
    _touch(tmp_path, "p/BUILD", "p/BUILD.pyimg")
    assert find_build_file(tmp_path, "p") == str(tmp_path / "p/BUILD.pyimg")
    assert find_build_file(tmp_path, "") is None


def test_a_nested_workspace_is_not_searched(tmp_path):
    # examples/debian-python is a workspace of its own inside examples/: `//...` of the outer
    # one must not load BUILD files that name the inner one's external repositories.
    _touch(tmp_path, "MODULE.pyimg", "app/BUILD", "inner/MODULE.pyimg", "inner/BUILD",
           "inner/sub/BUILD")  # fmt: skip
    assert find_packages(tmp_path) == ["app"]
    assert find_packages(tmp_path, "inner") == ["inner", "inner/sub"]
