"""actions/sbom.py: package URLs per kind, DEP-5 licences, the document's time, and the facts the
oci_sbom rule's providers make."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

from pyimg.actions.sbom import (
    PURLS,
    _created,
    _dep5_licenses,
    _license_expression,
    file_package,
    layer_files,
    oci_package,
    purl,
    rule_facts,
)


def test_purls_of_each_kind() -> None:
    assert purl("deb", {"name": "libc6", "version": "1:2.36-9+deb12u4", "arch": "amd64"}) == \
        "pkg:deb/debian/libc6@1%3A2.36-9+deb12u4?arch=amd64"
    assert purl("generic", {"name": "tini", "sha256": "ab" * 32,
                            "download_url": "https://example.com/a b?x=1"}) == (
        "pkg:generic/tini?checksum=sha256:" + "ab" * 32
        + "&download_url=https%3A%2F%2Fexample.com%2Fa%20b%3Fx%3D1")
    assert oci_package("gcr.io/distroless/static", "sha256:" + "cd" * 32)["purl"] == \
        "pkg:oci/static@sha256%3A" + "cd" * 32 + "?repository_url=gcr.io/distroless/static"
    assert purl("pypi", {"name": "Typing_Extensions", "version": "4.12.2"}) == \
        "pkg:pypi/typing-extensions@4.12.2"
    assert purl("npm", {"name": "@babel/core", "version": "7.24.0"}) == \
        "pkg:npm/%40babel/core@7.24.0"
    # The table is the hook for new input kinds: one function each.
    assert set(PURLS) == {"oci", "deb", "generic", "pypi", "npm"}


def test_file_package_has_no_url_unless_given() -> None:
    p = file_package("external/tool/file/tool.sh", "ef" * 32)
    assert p["name"] == "tool.sh" and "download_url" not in p["purl"]
    assert p["id"] == "file:external/tool/file/tool.sh"


def test_dep5_licenses_split_expressions_and_ignore_free_form_text() -> None:
    text = b"""Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
License: GPL-2+ or Artistic

Files: lib/*
License: LGPL-2.1+ and BSD-3-clause
 The text of the licence, which mentions License: nothing.
"""
    assert _dep5_licenses(text) == ["Artistic", "BSD-3-clause", "GPL-2+", "LGPL-2.1+"]
    assert _dep5_licenses(b"This package is in the public domain.\n") == []


def test_license_expression_maps_debian_names_and_refers_to_the_rest() -> None:
    extracted: dict[str, tuple[str, str]] = {}
    assert _license_expression(["GPL-2+", "Expat", "Odd licence"], extracted) == \
        "(GPL-2.0-or-later AND LicenseRef-debian-Odd.licence AND MIT)"
    assert extracted == {"LicenseRef-debian-Odd.licence": (
        "Odd licence", "The Debian copyright file names this licence 'Odd licence'.")}
    assert _license_expression([], {}) == "NOASSERTION"
    assert _license_expression(["public-domain"], {}) == "NOASSERTION"


def test_created_comes_from_the_config_then_source_date_epoch_never_the_clock() -> None:
    assert _created({"created": "2024-05-06T09:08:09+02:00"}, 99) == "2024-05-06T07:08:09Z"
    assert _created({"created": "2024-05-06T07:08:09.123456789Z"}, None) == \
        "2024-05-06T07:08:09Z"
    assert _created({}, 1700000000) == "2023-11-14T22:13:20Z"
    assert _created({}, None) == "1970-01-01T00:00:00Z"


def test_rule_facts_spread_a_base_entry_over_the_base_layers() -> None:
    layers = [
        {"base": "@base//:base", "pulled": {"image": "r.example/b", "digest": "sha256:" + "0" * 64}},
        {"target": "//:t", "files": ["external/tool/file/t", "pkg/x.txt"]},
    ]

    def package(path: str):  # noqa: ANN202
        return file_package(path, "1" * 64) if path.startswith("external/") else None

    facts = rule_facts(layers, 3, package)
    assert [x["target"] for x in facts["layers"]] == ["@base//:base", "@base//:base", "//:t"]
    assert [len(x["packages"]) for x in facts["layers"]] == [1, 1, 1]
    assert [p["id"] for p in facts["packages"]] == [
        "file:external/tool/file/t", "oci:r.example/b@sha256:" + "0" * 64]


def test_layer_files_keep_a_leading_dot_and_report_symlinks(tmp_path: Path) -> None:
    blob = tmp_path / "layer.tar"
    with tarfile.open(blob, "w") as tar:
        for name, data in ((".profile", b"p"), ("./.bashrc", b"b"), ("./etc/os-release", b"o")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("./bin")
        link.type, link.linkname = tarfile.SYMTYPE, "usr/bin"
        tar.addfile(link)
    links: dict[str, str] = {}
    paths = [f.path for f in layer_files(blob, "test", links)]
    assert paths == [".profile", ".bashrc", "etc/os-release"]
    assert links == {"bin": "usr/bin"}


def test_layer_files_of_a_layer_left_to_tarfile_are_the_same(tmp_path: Path) -> None:
    """A global PAX header is read by tarfile instead of oci/tar_scan.py: same files, same
    digests, hard links with their target's, symlinks reported."""
    def layer(path: Path, pax: dict[str, str]) -> Path:
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT, pax_headers=pax) as tar:
            info = tarfile.TarInfo("./etc/motd")
            info.size, info.mode, info.uid = 2, 0o4755, 7
            tar.addfile(info, io.BytesIO(b"hi"))
            for kind, name, target in ((tarfile.LNKTYPE, "./motd2", "./etc/motd"),
                                       (tarfile.SYMTYPE, "./m", "etc/motd")):
                info = tarfile.TarInfo(name)
                info.type, info.linkname = kind, target
                tar.addfile(info)
        return path

    results = []
    for pax in ({}, {"comment": "a global header"}):
        links: dict[str, str] = {}
        results.append((list(layer_files(layer(tmp_path / f"l{len(pax)}.tar", pax), "t", links)),
                        links))
    assert results[0] == results[1]
    files, links = results[0]
    assert [(f.path, f.mode, f.uid) for f in files] == [("etc/motd", 0o4755, 7),
                                                        ("motd2", 0o644, 0)]
    assert files[0].sha256 == files[1].sha256 == hashlib.sha256(b"hi").hexdigest()
    assert links == {"m": "etc/motd"}


def test_a_declared_expression_is_kept_when_spdx_knows_it_else_one_licence_ref() -> None:
    from pyimg.actions.sbom import _declared_expression, _declared_license

    assert _declared_expression("mit") == "MIT"
    assert _declared_expression("(ISC OR apache-2.0) AND MIT") == "(ISC OR Apache-2.0) AND MIT"
    assert _declared_expression("GPL-2.0-or-later WITH Classpath-exception-2.0") == \
        "GPL-2.0-or-later WITH Classpath-exception-2.0"
    for bad in ("", "MIT OR", "(MIT", "MIT)", "Foo", "MIT WITH MIT", "SEE LICENSE IN x",
                "LicenseRef-x", "MIT AND AND ISC"):
        assert _declared_expression(bad) is None, bad
    extracted: dict[str, tuple[str, str]] = {}
    assert _declared_license({"license_expression": ""}, extracted) == "NOASSERTION"
    assert _declared_license({"license_expression": "Proprietary", "license_kind": "npm"},
                             extracted) == "LicenseRef-npm-Proprietary"
    long = _declared_license({"license_expression": "Line one\nall the text", "license_kind":
                              "pypi"}, extracted)
    assert long.startswith("LicenseRef-pypi-Line.one-") and extracted[long][0] == "Line one"
    assert extracted[long][1].endswith("Line one\nall the text")


def test_a_wheel_s_licence_prefers_its_expression_then_license_then_classifiers() -> None:
    import email.parser

    from pyimg.actions.sbom import _npm_license, _wheel_license

    def meta(*lines: str) -> object:
        return email.parser.HeaderParser().parsestr("\n".join(lines) + "\n\n")

    assert _wheel_license(meta("License-Expression: MIT", "License: BSD")) == "MIT"
    assert _wheel_license(meta("License: BSD-3-Clause")) == "BSD-3-Clause"
    assert _wheel_license(meta("License: UNKNOWN",
                               "Classifier: License :: OSI Approved :: MIT License",
                               "Classifier: License :: OSI Approved",
                               "Classifier: License :: OSI Approved :: ISC License (ISCL)")) \
        == "ISC OR MIT"
    assert _wheel_license(meta("Name: x")) == ""
    assert _npm_license({"license": "MIT"}) == "MIT"
    assert _npm_license({"license": {"type": "ISC"}}) == "ISC"
    assert _npm_license({"licenses": [{"type": "MIT"}, {"type": "Apache-2.0"}]}) == \
        "Apache-2.0 OR MIT"
    assert _npm_license({}) == ""
