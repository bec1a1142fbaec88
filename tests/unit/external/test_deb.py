"""deb_index's lock entry format, file names and Release parsing (the archive itself is tested
against a signed loopback archive in tests/integration/test_external_deb.py)."""

from __future__ import annotations

import json

import pytest
from pyimg.errors import UserInputError
from pyimg.external.deb import deb_file_name, parse_release, render_entry


def test_file_names_write_the_epoch_as_apt_does() -> None:
    assert deb_file_name("libc6", "1:2.36-9", "amd64") == "libc6_1%3a2.36-9_amd64.deb"
    assert deb_file_name("tzdata", "2024a-0+deb12u1", "all") == "tzdata_2024a-0+deb12u1_all.deb"


def test_lock_entry_has_one_package_per_line_and_reads_back() -> None:
    pkg = {"arch": "amd64", "sha256": "a" * 64, "size": 1, "url": "http://x/a.deb", "version": "1"}
    entry = {"kind": "deb_index", "digest": "sha256:" + "b" * 64, "packages": ["zz", "a"],
             "sources": ["http://x bookworm main"], "architectures": ["arm64", "amd64"],
             "debs": {"arm64": {"zz": pkg, "a": pkg}, "amd64": {"b": pkg}}}
    text = render_entry(entry)
    assert json.loads(text) == entry
    lines = text.splitlines()
    assert [line.split('"')[1] for line in lines if '"sha256": "a' in line] == ["b", "a", "zz"]
    assert render_entry(json.loads(text)) == text  # stable through a read and a write


def test_release_sha256_list_and_date() -> None:
    release = parse_release(
        "Origin: Debian\nDate: Sat, 10 Feb 2024 09:13:58 UTC\nMD5Sum:\n 00 1 main/x\n"
        "SHA256:\n abc 12 main/binary-amd64/Packages.xz\n def 30 main/binary-amd64/Packages\n",
        "InRelease",
    )
    assert release.sha256 == {"main/binary-amd64/Packages.xz": ("abc", 12),
                              "main/binary-amd64/Packages": ("def", 30)}
    assert release.date == 1707556438.0
    with pytest.raises(UserInputError, match="no SHA256 list"):
        parse_release("Origin: x\nMD5Sum:\n 00 1 main/x\n", "InRelease")


@pytest.mark.parametrize(
    ("field", "value"),
    [("name", "../../escape"), ("version", "1/../../x"), ("arch", "amd64/.."),
     ("sha256", "0" * 63), ("size", "big")],
)
def test_a_hand_edited_lock_entry_is_refused(field: str, value: str) -> None:
    from pathlib import Path

    from pyimg.loading.module_file import parse_module

    (decl,) = parse_module(
        'deb_index(name = "d", sources = ["http://x/debian bookworm main"], keyring = "k", '
        'architectures = ["amd64"], packages = ["a"])\n', Path("MODULE.pyimg")).declarations
    pkg = {"arch": "amd64", "sha256": "a" * 64, "size": 1, "url": "http://x/a.deb", "version": "1"}
    name = "a"
    if field == "name":
        name = value
    else:
        pkg[field] = value
    from pyimg.external.deb import entry_pins

    with pytest.raises(UserInputError, match="entry of deb_index 'd' is malformed"):
        entry_pins(decl, {"debs": {"amd64": {name: pkg}}})  # type: ignore[arg-type]


def test_an_armored_keyring_with_several_blocks_is_read_whole() -> None:
    import base64

    from pyimg.external.deb import _dearmor

    def block(data: bytes) -> str:
        text = base64.b64encode(data).decode()
        return ("-----BEGIN PGP PUBLIC KEY BLOCK-----\nComment: a key\n\n"
                + "\n".join(text[i:i + 8] for i in range(0, len(text), 8))
                + "\n=abcd\n-----END PGP PUBLIC KEY BLOCK-----\n")

    assert _dearmor((block(b"first key") + "\n" + block(b"second")).encode()) == b"first keysecond"
