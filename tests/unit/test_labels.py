import pytest
from pyimg.labels import (
    Label,
    LabelError,
    check_rule_name,
    is_utf8_name,
    parse_label,
    parse_pattern,
)


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


@pytest.mark.parametrize(
    "bad", ["", "//a/../b:c", "//a:", "//a:b/../c", "@1x//a", "//", "a\nb", "//p:x\ty", "a\x7f", "a\x85"]
)
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


# Files are named by what the file system holds: any character but control characters.
FILE_NAMES = [
    "has space.txt",
    "données-ñ-日本語.txt",
    "x+@=,~#!$&'();[].txt",
    'q"uote`s\\back{}|<>?^%*.txt',
    "File::Spec.3pm",
    "node_modules/@types/node/index.d.ts",
    "🙂 emoji/zero\u200dwidth.txt",
]


@pytest.mark.parametrize("name", FILE_NAMES)
def test_any_file_name_is_a_label(name):
    label = parse_label(name, "p")
    assert label == Label("", "p", name)
    assert parse_label(str(label)) == label  # the printed form reads back
    assert parse_pattern(str(label)).name == name  # and works on the command line


def test_a_file_starting_with_at_or_colon_is_written_with_a_leading_colon():
    assert parse_label(":@scope.txt", "p") == Label("", "p", "@scope.txt")
    assert parse_label("::x.txt", "p") == Label("", "p", ":x.txt")
    assert parse_label("@scope", "p").repo == "scope"  # without it: a repository, as in Bazel


def test_control_characters_are_refused_with_the_code_point():
    with pytest.raises(LabelError, match=r"control character U\+000A in 'a\\nb'"):
        parse_label("a\nb", "p")


@pytest.mark.parametrize("name", ["image", "a-b_c.d", "x/y", "a+b,c=d~e#f!g$h&i'j(k)l;m[n]o@p"])
def test_rule_names_keep_bazels_characters(name):
    check_rule_name(name)


@pytest.mark.parametrize(
    "name,char",
    [("has space", "' ' (U+0020)"), ("données", "'é' (U+00E9)"), ("a:b", "':' (U+003A)"),
     ("a\\b", "'\\\\' (U+005C)"), ("tab\there", "'\\t' (U+0009)")],
)
def test_rule_names_outside_bazels_set_say_which_character_and_what_is_allowed(name, char):
    with pytest.raises(LabelError) as e:
        check_rule_name(name)
    assert char in str(e.value)
    assert "allowed: letters A-Z a-z, digits and !%-@^_" in str(e.value)


@pytest.mark.parametrize("name", ["", ".", "a/../b", "a//b", "/a"])
def test_rule_names_with_bad_segments(name):
    with pytest.raises(LabelError):
        check_rule_name(name)


def test_is_utf8_name():
    assert is_utf8_name("données-ñ-日本語.txt")
    assert is_utf8_name("has space.txt")
    # os.fsdecode turns the byte 0xff, which UTF-8 never uses, into a lone surrogate.
    assert not is_utf8_name(b"bad\xff.txt".decode("utf-8", "surrogateescape"))


def test_equal_labels_share_one_tuple_and_one_text():
    # The label table: at 50,000 targets every reference to a target used to be its own tuple
    # and its own string (docs/benchmarks.md, "50,000 targets").
    a = parse_label("//scale/table:t")
    b = parse_label(":t", "scale/table")
    assert a == b and a is b
    assert str(a) is str(b)
    assert str(a) == "//scale/table:t"
