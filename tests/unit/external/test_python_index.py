"""Wheel tags for a target platform in pip's order, index pages (PEP 503 and 691), and the
wheel pip would choose."""

from __future__ import annotations

import json

from pyimg.external.python_index import (
    choose_wheel,
    marker_environment,
    parse_index_page,
    target_tags,
)
from pyimg.external.python_requirements import WheelFile


def _tags(platform: str = "linux/amd64", glibc: str = "2.28", musl: str | None = None) -> list[str]:
    return [str(t) for t in target_tags("3.11", platform, glibc, musl)]


def test_tag_order_is_pips() -> None:
    tags = _tags()
    assert tags[0] == "cp311-cp311-manylinux_2_28_x86_64"
    order = ["cp311-cp311-manylinux_2_17_x86_64", "cp311-cp311-manylinux2014_x86_64",
             "cp311-cp311-manylinux1_x86_64", "cp311-abi3-manylinux_2_28_x86_64",
             "cp38-abi3-manylinux2014_x86_64", "py3-none-manylinux_2_28_x86_64", "py3-none-any"]
    assert [tags.index(t) for t in order] == sorted(tags.index(t) for t in order)
    assert "cp311-cp311-manylinux_2_29_x86_64" not in tags  # newer than the target's glibc
    assert "cp311-cp311-linux_x86_64" not in tags  # built for one machine: never portable
    assert "cp311-cp311-win_amd64" not in tags


def test_arm64_and_musl() -> None:
    arm = _tags("linux/arm64")
    assert arm[0] == "cp311-cp311-manylinux_2_28_aarch64"
    assert "cp311-cp311-manylinux2014_aarch64" in arm
    assert "cp311-cp311-manylinux_2_16_aarch64" not in arm  # aarch64 starts at glibc 2.17
    assert not any("x86_64" in t for t in arm)
    musl = _tags(musl="1.2")
    assert musl[0] == "cp311-cp311-musllinux_1_2_x86_64"
    assert not any("manylinux" in t for t in musl)


def test_choose_wheel_as_pip() -> None:
    files = [WheelFile(n, "u/" + n, "") for n in (
        "pkg-1.0-py3-none-any.whl", "pkg-1.0-cp38-abi3-manylinux_2_17_x86_64.whl",
        "pkg-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "pkg-1.0-cp311-cp311-manylinux_2_34_x86_64.whl", "pkg-1.1-py3-none-any.whl",
        "pkg-1.0.tar.gz")]
    tags = target_tags("3.11", "linux/amd64", "2.28", None)
    chosen = choose_wheel(files, "pkg", "1.0", tags)
    assert chosen is not None
    assert chosen.filename == "pkg-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    # On Python 3.12 the cp311 wheel does not fit: abi3 does.
    chosen = choose_wheel(files, "pkg", "1.0", target_tags("3.12", "linux/amd64", "2.28", None))
    assert chosen is not None and chosen.filename == "pkg-1.0-cp38-abi3-manylinux_2_17_x86_64.whl"
    chosen = choose_wheel(files, "pkg", "1.0", target_tags("3.11", "linux/arm64", "2.28", None))
    assert chosen is not None and chosen.filename == "pkg-1.0-py3-none-any.whl"
    assert choose_wheel(files[-1:], "pkg", "1.0", tags) is None  # only an sdist


def test_html_and_json_pages() -> None:
    html = (b'<html><body><a href="../../files/a-1.0-py3-none-any.whl#sha256=' + b"ab" * 32
            + b'" data-requires-python="&gt;=3.8">a-1.0-py3-none-any.whl</a>'
            b'<a href="https://cdn.example/a-1.0.tar.gz">a-1.0.tar.gz</a></body></html>')
    page = parse_index_page(html, "text/html", "http://idx/simple/a/", "t")
    assert page.files[0].url == "http://idx/files/a-1.0-py3-none-any.whl"
    assert page.files[0].sha256 == "ab" * 32
    assert page.files[1].filename == "a-1.0.tar.gz" and page.files[1].sha256 == ""
    doc = {"meta": {"api-version": "1.1"}, "name": "a", "files": [
        {"filename": "a-1.0-py3-none-any.whl", "url": "/f/a.whl", "hashes": {"sha256": "CD" * 32}}]}
    page = parse_index_page(json.dumps(doc).encode(), "application/vnd.pypi.simple.v1+json",
                            "http://idx/simple/a/", "t")
    assert page.files[0].url == "http://idx/f/a.whl" and page.files[0].sha256 == "cd" * 32


def test_marker_environment() -> None:
    from packaging.markers import Marker

    env = marker_environment("3.11", "linux/arm64")
    assert Marker("platform_machine == 'aarch64' and python_version >= '3.10'").evaluate(env)
    assert not Marker("sys_platform == 'win32'").evaluate(env)
