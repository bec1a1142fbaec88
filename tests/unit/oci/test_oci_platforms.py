"""The platform table: OCI values, "did you mean", the host's platform, choosing an index entry."""

from __future__ import annotations

import pytest
from pyimg.core.digest import digest_bytes
from pyimg.core.errors import UserInputError
from pyimg.oci import platforms
from pyimg.oci.model import Descriptor, Platform
from pyimg.oci.platforms import match_platform, parse_platform, platform_problem


@pytest.mark.parametrize(
    ("value", "meant"),
    [("aarch64", '"arm64"'), ("x86_64", '"amd64"'), ("x86-64", '"amd64"'), ("i386", '"386"'),
     ("x86", '"386"'), ("armhf", 'architecture = "arm", variant = "v7"'), ("AMD64", '"amd64"'),
     ("ppc64el", '"ppc64le"')],
)
def test_common_architecture_names_get_a_suggestion(value: str, meant: str) -> None:
    field, message = platform_problem("linux", value, None) or ("", "")
    assert field == "architecture" and message.endswith(f"did you mean {meant}?")


def test_valid_values_pass() -> None:
    for os_, arch, variant in [("linux", "amd64", None), ("linux", "arm64", "v8"),
                               ("linux", "arm", "v7"), ("windows", "amd64", None),
                               ("linux", "amd64", "v3"), ("linux", "riscv64", None), ("", "", "")]:
        assert platform_problem(os_, arch, variant) is None


def test_unknown_values_list_the_known_ones() -> None:
    assert "known: 386, amd64" in platform_problem("linux", "sparc", None)[1]  # type: ignore[index]
    assert platform_problem("Linux", "amd64", None)[1].endswith('did you mean "linux"?')  # type: ignore[index]
    assert "has no variants" in platform_problem("linux", "s390x", "v1")[1]  # type: ignore[index]


def test_parse_platform() -> None:
    assert parse_platform("linux/arm/v7", "x") == Platform("linux", "arm", "v7")
    with pytest.raises(UserInputError, match="not a platform like"):
        parse_platform("linux", "x")
    with pytest.raises(UserInputError, match='x: architecture .* did you mean "arm64"'):
        parse_platform("linux/aarch64", "x")


@pytest.mark.parametrize(
    ("machine", "expected"),
    [("x86_64", "linux/amd64"), ("aarch64", "linux/arm64/v8"), ("arm64", "linux/arm64/v8"),
     ("armv7l", "linux/arm/v7"), ("i686", "linux/386"), ("s390x", "linux/s390x")],
)
def test_host_platform(monkeypatch: pytest.MonkeyPatch, machine: str, expected: str) -> None:
    monkeypatch.setattr(platforms._host, "machine", lambda: machine)
    monkeypatch.setattr(platforms.sys, "platform", "linux")
    assert str(platforms.host_platform()) == expected


def _entry(text: str) -> Descriptor:
    return Descriptor("m", digest_bytes(text.encode()), 1, platform=parse_platform(text, "t"))


def test_match_platform() -> None:
    amd, arm64, arm64v8, armv6, armv7 = (_entry(t) for t in (
        "linux/amd64", "linux/arm64", "linux/arm64/v8", "linux/arm/v6", "linux/arm/v7"))
    assert match_platform([amd, arm64v8], Platform("linux", "amd64")) is amd
    # arm64 is v8 unless it says otherwise, both ways
    assert match_platform([amd, arm64], Platform("linux", "arm64", "v8")) is arm64
    assert match_platform([amd, arm64v8], Platform("linux", "arm64")) is arm64v8
    assert match_platform([armv6, armv7], Platform("linux", "arm", "v7")) is armv7
    assert match_platform([armv6, armv7], Platform("linux", "arm")) is None  # which one?
    assert match_platform([armv7], Platform("linux", "arm")) is armv7
    assert match_platform([armv6], Platform("linux", "arm", "v7")) is None
    any_arm = _entry("linux/arm")  # no variant: runs on any
    assert match_platform([any_arm, armv6], Platform("linux", "arm", "v7")) is any_arm
    assert match_platform([amd], Platform("linux", "s390x")) is None
