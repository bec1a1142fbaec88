"""npm_layer's platform rule: npm-install-checks' reading of `os`, `cpu` and `libc`."""

from __future__ import annotations

import pytest
from pyimg.actions.npm_layer import platform_ok


@pytest.mark.parametrize(("pkg", "ok"), [
    ({}, True),
    ({"os": ["linux"], "cpu": ["x64"]}, True),
    ({"os": ["darwin"]}, False),
    ({"os": ["!win32"]}, True),
    ({"os": ["!linux"]}, False),
    ({"cpu": ["arm64", "x64"]}, True),
    ({"cpu": ["any"]}, True),
    ({"os": ["linux"], "libc": ["musl"]}, False),
    ({"os": ["linux"], "libc": ["glibc"]}, True),
])
def test_platform_ok(pkg: dict[str, list[str]], ok: bool) -> None:
    assert platform_ok(pkg, "linux", "x64", "glibc") is ok


def test_libc_only_on_linux() -> None:
    assert platform_ok({"libc": ["musl"]}, "darwin", "arm64", "glibc")
