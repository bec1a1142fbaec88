from pyimg.loading.inputs import glob_package


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
