import pytest
from pyimg.labels import Label, LabelError, parse_label, parse_pattern


@pytest.mark.parametrize(
    "text,pkg,expected",
    [
        ("//a/b:c", "", Label("", "a/b", "c")),
        ("//a/b", "", Label("", "a/b", "b")),
        (":c", "x", Label("", "x", "c")),
        ("c.txt", "x", Label("", "x", "c.txt")),
        ("sub/c.txt", "x", Label("", "x", "sub/c.txt")),
        ("@r", "", Label("r", "", "r")),
        ("@r//p:t", "", Label("r", "p", "t")),
        ("//:root", "x", Label("", "", "root")),
    ],
)
def test_parse_label(text, pkg, expected):
    assert parse_label(text, pkg) == expected


@pytest.mark.parametrize("bad", ["", "//a/../b:c", "//a:", "//a:b/../c", "a:b:c", "@1x//a", "//"])
def test_bad_labels(bad):
    with pytest.raises(LabelError):
        parse_label(bad, "pkg")


def test_patterns():
    assert str(parse_pattern("//...")) == "//..."
    assert parse_pattern("//svc/...").package == "svc" and parse_pattern("//svc/...").recursive
    assert parse_pattern("//svc:all").name is None
    assert parse_pattern("//svc").name == "svc"
    assert parse_pattern(":img", "svc") == parse_pattern("//svc:img")
    assert parse_pattern("img", "svc") == parse_pattern("//svc:img")


def test_external_patterns():
    assert parse_pattern("@base") == parse_pattern("@base//:base")
    assert str(parse_pattern("@base")) == "@base//:base"
    assert parse_pattern("@site//www:all").repo == "site"
    assert str(parse_pattern("@site//www:all")) == "@site//www:all"
    assert parse_pattern("@site//www").name == "www"
    with pytest.raises(LabelError, match="recursive patterns over external"):
        parse_pattern("@site//...")
    with pytest.raises(LabelError, match="invalid repository name"):
        parse_pattern("@-x//:y")
