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


def _pkg(path: str, **extra: object) -> dict[str, object]:
    base = {"path": path, "name": path.rsplit("node_modules/", 1)[-1], "version": "1.0.0",
            "tarball": None, "bin": {}, "os": [], "cpu": [], "libc": [], "dev": False,
            "optional": False, "dev_optional": False, "deps": []}
    return {**base, **extra}


PLAN = [
    _pkg("node_modules/a"),
    _pkg("node_modules/d", dev=True, deps=["node_modules/dd"]),
    _pkg("node_modules/dd", dev=True),
    _pkg("node_modules/x64", optional=True, cpu=["x64"], deps=["node_modules/shared"]),
    _pkg("node_modules/arm", optional=True, cpu=["arm64"], deps=["node_modules/arm-only"]),
    _pkg("node_modules/arm-only", optional=True),
    _pkg("node_modules/shared", optional=True),
    _pkg("node_modules/both", dev_optional=True, os=["darwin"]),
]
ROOTS = {"deps": ["node_modules/a", "node_modules/x64", "node_modules/arm"],
         "dev_deps": ["node_modules/d", "node_modules/both"]}


def _paths(platform: str, include_dev: bool = False, libc: str = "glibc") -> list[str]:
    from pyimg.actions.npm_layer import _select

    return sorted(p.path.removeprefix("node_modules/")
                  for p in _select(PLAN, ROOTS, platform, libc, include_dev, "t"))


def test_select_by_platform_and_dev() -> None:
    assert _paths("linux/amd64") == ["a", "shared", "x64"]
    # arm64: the x64 package goes, and so does what only it needed; the arm64 one comes.
    assert _paths("linux/arm64/v8") == ["a", "arm", "arm-only"]
    assert _paths("linux/amd64", include_dev=True) == ["a", "d", "dd", "shared", "x64"]


def test_select_refuses_a_required_package_for_another_platform() -> None:
    from pyimg.actions.npm_layer import _select
    from pyimg.errors import UserInputError

    plan = [_pkg("node_modules/mac", os=["darwin"])]
    with pytest.raises(UserInputError, match="'node_modules/mac'.*not linux/amd64.*EBADPLATFORM"):
        _select(plan, {"deps": ["node_modules/mac"], "dev_deps": []}, "linux/amd64", "glibc",
                False, "t")
