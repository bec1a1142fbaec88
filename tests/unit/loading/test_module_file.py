"""MODULE.pyimg: declarations, validation, and errors at MODULE.pyimg:line."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyimg.errors import UserInputError
from pyimg.loading.module_file import (
    DebIndex,
    DebSource,
    HttpArchive,
    HttpFile,
    OciPull,
    parse_module,
)

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


_DEB = ('deb_index(name = "d", sources = {sources}, keyring = {keyring}, '
        'architectures = {arches}, packages = {packages}{extra})')


def _deb(sources: str = '["https://x/debian bookworm main contrib"]', keyring: str = '"k.gpg"',
         arches: str = '["amd64"]', packages: str = '["a", "b=1:2.0-1"]', extra: str = "") -> str:
    return _DEB.format(sources=sources, keyring=keyring, arches=arches, packages=packages,
                       extra=extra)


def test_deb_index_declaration() -> None:
    (d,) = parse("\n" + _deb(arches='["amd64", "arm64", "amd64"]') + "\n").declarations
    assert isinstance(d, DebIndex) and d.origin == "MODULE.pyimg:2:1" and not d.pinned
    assert d.sources == (DebSource("https://x/debian", "bookworm", ("main", "contrib")),)
    assert str(d.sources[0]) == "https://x/debian bookworm main contrib"
    assert d.architectures == ("amd64", "arm64") and d.packages == ("a", "b=1:2.0-1")
    assert d.max_release_age_days == 90


@pytest.mark.parametrize(
    "text, message",
    [
        (_deb(sources='["https://x/debian bookworm"]'), "must be 'URL SUITE COMPONENT...'"),
        (_deb(sources='["ftp://x bookworm main"]'), "must be 'URL SUITE COMPONENT...'"),
        (_deb(sources="[]"), "'sources' must be a non-empty list"),
        (_deb(keyring='"/etc/apt/trusted.gpg"'), "'keyring' must be a file path inside"),
        (_deb(keyring='"../k.gpg"'), "'keyring' must be a file path inside"),
        (_deb(arches='["all"]'), "'all' is not a Debian architecture"),
        (_deb(arches='["x86_64"]'), "'x86_64' is not a Debian architecture"),
        (_deb(packages='["Python3"]'), "'Python3' is not a Debian package name"),
        (_deb(extra=", max_release_age_days = 0"), "'max_release_age_days' must be a positive"),
    ],
)
def test_bad_deb_index(text: str, message: str) -> None:
    with pytest.raises(UserInputError) as e:
        parse(text + "\n")
    assert "MODULE.pyimg:1:1: deb_index 'd'" in str(e.value) and message in str(e.value)
