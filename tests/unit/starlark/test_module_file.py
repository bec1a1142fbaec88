"""MODULE.pyimg: declarations, validation, and errors at MODULE.pyimg:line."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyimg.core.errors import UserInputError
from pyimg.starlark.module_file import HttpArchive, HttpFile, OciPull, parse_module

SHA = "ab" * 32


def parse(text: str):
    return parse_module(text, Path("MODULE.pyimg"))


def test_declarations_with_origins() -> None:
    m = parse(f"""# inputs
oci_pull(name = "base", image = "gcr.io/distroless/static", tag = "nonroot",
         platforms = ["linux/amd64", "linux/arm64/v8"])
http_file(name = "tool", urls = ["https://x/tool"], sha256 = "{SHA}", executable = True)
http_archive(name = "src", urls = ["https://x/src.tgz"], sha256 = "{SHA}", strip_prefix = "src-1/")
""")
    base, tool, src = m.declarations
    assert base == OciPull(
        "base",
        "MODULE.pyimg:2:1",
        "gcr.io/distroless/static",
        None,
        "nonroot",
        ("linux/amd64", "linux/arm64/v8"),
    )
    assert (
        isinstance(tool, HttpFile) and tool.origin == "MODULE.pyimg:4:1" and tool.file_name == "tool"
    )
    assert isinstance(src, HttpArchive) and src.strip_prefix == "src-1" and src.pinned


@pytest.mark.parametrize(
    "text, message",
    [
        ('oci_pull(name = "b", image = "x")', "MODULE.pyimg:1:1: oci_pull 'b': give 'digest'"),
        ('oci_pull(name = "b", image = "x:1", tag = "t")', "must not hold a tag or digest"),
        ('oci_pull(name = "b", image = "x", digest = "sha256:1")', "'digest' must be"),
        ('oci_pull(name = "1b", image = "x", tag = "t")', "'name' must be a repository name"),
        ('http_file(name = "f", urls = [], sha256 = "x")', "'urls' must be a non-empty list"),
        ('http_file(name = "f", urls = ["ftp://x"])', "must start with https://"),
        ('http_file(name = "f", urls = ["https://x"], sha256 = "abc")', "'sha256' must be 64 hex"),
        (
            'http_file(name = "f", urls = ["https://x"], downloaded_file_path = "../x")',
            "'downloaded_file_path' must be a relative file path",
        ),
        ('\n  \nload("//x:y.bzl", "z")', "MODULE.pyimg:3:1: load() of '//x:y.bzl'"),
        (
            'oci_pull(name = "b", image = "x", tag = "t", platforms = ["linux/aarch64"])',
            'oci_pull \'b\': \'platforms\': architecture \'aarch64\' is not an OCI architecture',
        ),
    ],
)
def test_bad_declarations(text: str, message: str) -> None:
    with pytest.raises(UserInputError) as e:
        parse(text + "\n")
    assert message in str(e.value)


def test_refused_load_says_where_once() -> None:
    with pytest.raises(UserInputError) as e:
        parse('# x\nload("//x:y.bzl", "z")\n')
    assert str(e.value) == (
        "MODULE.pyimg:2:1: load() of '//x:y.bzl': MODULE.pyimg declares external inputs only "
        "and cannot load files"
    )


def test_duplicate_name_names_both_lines() -> None:
    with pytest.raises(UserInputError) as e:
        parse(
            'oci_pull(name = "b", image = "x", tag = "t")\n\noci_pull(name = "b", image = "y", tag = "t")\n'
        )
    assert str(e.value).startswith("MODULE.pyimg:3:")
    assert "already declared at MODULE.pyimg:1" in str(e.value)


def test_unknown_parameter_points_at_the_line() -> None:
    with pytest.raises(UserInputError) as e:
        parse('\noci_pull(name = "b", imag = "x")\n')
    assert "MODULE.pyimg:2" in str(e.value)


def test_http_archive_unpacking_bounds() -> None:
    m = parse(f'http_archive(name = "a", urls = ["https://x/a.zip"], sha256 = "{SHA}", '
              "max_unpacked_bytes = 1 << 34, max_unpacked_files = 10)\n")
    (a,) = m.declarations
    assert isinstance(a, HttpArchive) and (a.max_unpacked_bytes, a.max_unpacked_files) == (1 << 34, 10)
    with pytest.raises(UserInputError, match="'max_unpacked_files' must be a positive integer, got '10'"):
        parse(f'http_archive(name = "a", urls = ["https://x/a.zip"], sha256 = "{SHA}", '
              'max_unpacked_files = "10")\n')
