"""The platform values pyimg accepts (OCI image-index `os`, `architecture`, `variant`), their
common misspellings, the running machine's platform, and choosing an index entry for one.

The image-index spec asks for Go's `GOOS` and `GOARCH` values and lists the ARM variants; the
other variants are those Go and containerd use (`GOAMD64`, `GOARM64`, `GOPPC64`, `GORISCV64`).
This is the one table of them: rules, MODULE.pyimg and the builtins all check against it.
"""

from __future__ import annotations

import platform as _host
import sys
from collections.abc import Iterable

from pyimg.errors import UserInputError
from pyimg.oci.model import Descriptor, Platform

__all__ = [
    "ARCHITECTURES",
    "OPERATING_SYSTEMS",
    "VARIANTS",
    "check_platform",
    "first_platform_match",
    "host_platform",
    "match_platform",
    "parse_platform",
    "platform_problem",
    "platforms_agree",
    "platform_text_problem",
]

# `go tool dist list`: the first parts (GOOS) and the second parts (GOARCH).
OPERATING_SYSTEMS = frozenset({
    "aix", "android", "darwin", "dragonfly", "freebsd", "illumos", "ios", "js", "linux",
    "netbsd", "openbsd", "plan9", "solaris", "wasip1", "windows",
})  # fmt: skip
ARCHITECTURES = frozenset({
    "386", "amd64", "arm", "arm64", "loong64", "mips", "mipsle", "mips64", "mips64le",
    "ppc64", "ppc64le", "riscv64", "s390x", "wasm",
})  # fmt: skip
# Variants by architecture; an architecture missing here has none.
VARIANTS: dict[str, tuple[str, ...]] = {
    "arm": ("v5", "v6", "v7", "v8"),
    "arm64": ("v8", *(f"v8.{i}" for i in range(1, 10)), "v9", *(f"v9.{i}" for i in range(1, 6))),
    "amd64": ("v1", "v2", "v3", "v4"),
    "ppc64le": ("power8", "power9", "power10"),
    "riscv64": ("rva20u64", "rva22u64"),
}

# What people write instead (uname -m, Debian and Rust names): the (architecture, variant) meant.
_ARCH_ALIASES: dict[str, tuple[str, str | None]] = {
    "aarch64": ("arm64", None), "arm64v8": ("arm64", "v8"), "armv8": ("arm64", None),
    "x86_64": ("amd64", None), "x86-64": ("amd64", None), "x64": ("amd64", None),
    "i386": ("386", None), "i486": ("386", None), "i586": ("386", None),
    "i686": ("386", None), "x86": ("386", None),
    "armhf": ("arm", "v7"), "armv7": ("arm", "v7"), "armv7l": ("arm", "v7"),
    "arm32v7": ("arm", "v7"), "armel": ("arm", "v6"), "armv6": ("arm", "v6"),
    "armv6l": ("arm", "v6"), "arm32v6": ("arm", "v6"), "armv5": ("arm", "v5"),
    "ppc64el": ("ppc64le", None), "powerpc64le": ("ppc64le", None),
    "loongarch64": ("loong64", None), "mipsel": ("mipsle", None), "mips64el": ("mips64le", None),
}  # fmt: skip
_OS_ALIASES = {"macos": "darwin", "osx": "darwin", "win": "windows", "win32": "windows",
               "gnu/linux": "linux"}  # fmt: skip


def _write(arch: str, variant: str | None) -> str:
    if variant:
        return f'architecture = "{arch}", variant = "{variant}"'
    return f'"{arch}"'


def platform_problem(os_: str | None, architecture: str | None,
                     variant: str | None) -> tuple[str, str] | None:
    """(field, message) for the first value that is not an OCI platform value, or None. Empty
    values are not checked (they mean "the base image's")."""
    if os_ and os_ not in OPERATING_SYSTEMS:
        meant = _OS_ALIASES.get(os_.lower(), os_.lower())
        hint = (f'; did you mean "{meant}"?' if meant in OPERATING_SYSTEMS
                else f" (known: {', '.join(sorted(OPERATING_SYSTEMS))})")
        return "os", f"os '{os_}' is not an OCI os value (one of Go's GOOS){hint}"
    if architecture and architecture not in ARCHITECTURES:
        alias = _ARCH_ALIASES.get(architecture.lower())
        if alias is None and architecture.lower() in ARCHITECTURES:
            alias = (architecture.lower(), None)
        hint = (f"; did you mean {_write(*alias)}?" if alias
                else f" (known: {', '.join(sorted(ARCHITECTURES))})")
        return "architecture", (
            f"architecture '{architecture}' is not an OCI architecture value (one of Go's "
            f"GOARCH){hint}"
        )
    if variant:
        known = VARIANTS.get(architecture, ()) if architecture else tuple(
            sorted({v for vs in VARIANTS.values() for v in vs}))
        if variant not in known:
            if architecture and not known:
                return "variant", f"architecture '{architecture}' has no variants, got '{variant}'"
            where = f" of architecture '{architecture}'" if architecture else ""
            meant = variant.lower() if variant.lower() in known else f"v{variant}"
            hint = f'; did you mean "{meant}"?' if meant in known else ""
            return "variant", (
                f"variant '{variant}' is not a variant{where} (known: {', '.join(known)}){hint}"
            )
    return None


def platform_text_problem(text: str) -> tuple[str, str] | None:
    """platform_problem() of `os/architecture[/variant]` text, with its shape checked first."""
    parts = text.split("/") if isinstance(text, str) else []
    if len(parts) not in (2, 3) or not all(parts):
        return "platform", f"{text!r} is not a platform like \"linux/arm64\" or \"linux/arm/v7\""
    return platform_problem(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


def check_platform(os_: str | None, architecture: str | None, variant: str | None,
                   what: str) -> None:
    """Raise a UserInputError that starts with `what` when a value is not an OCI one."""
    problem = platform_problem(os_, architecture, variant)
    if problem is not None:
        raise UserInputError(f"{what}: {problem[1]}")


def parse_platform(text: str, what: str) -> Platform:
    """`os/architecture[/variant]`, e.g. `linux/arm64` or `linux/arm/v7`, checked."""
    problem = platform_text_problem(text)
    if problem is not None:
        raise UserInputError(f"{what}: {problem[1]}")
    parts = text.split("/")
    return Platform(parts[0], parts[1], parts[2] if len(parts) == 3 else None)


def host_platform() -> Platform:
    """The platform of images that run on this machine. The OS is `linux` except on Windows:
    containers on macOS run in a Linux virtual machine."""
    os_ = "windows" if sys.platform.startswith(("win", "cygwin")) else "linux"
    machine = _host.machine().lower()
    arch, variant = _ARCH_ALIASES.get(machine, (machine, None))
    if arch == "arm64":
        variant = "v8"
    elif arch == "arm" and variant is None:
        variant = _arm_variant()
    return Platform(os_, arch, variant)


def _arm_variant() -> str:
    """v6, v7 or v8 for a 32-bit ARM machine, from the kernel's "CPU architecture" (v7 when
    unknown: the most common 32-bit ARM today)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "CPU architecture" and value.strip().isdigit():
                    return f"v{min(max(int(value.strip()), 5), 8)}"
    except OSError:
        pass
    return "v7"


def _variant(p: Platform) -> str | None:
    # arm64 images are v8 unless they say otherwise (containerd normalizes the same way).
    if p.architecture == "arm64" and p.variant in (None, "", "v8"):
        return "v8"
    return p.variant or None


def platforms_agree(image: Platform, base: Platform) -> bool:
    """Whether an image of platform `image` may be built on a base of platform `base`: same os
    and architecture, and the same variant where both name one (arm64 is v8 unless it says
    otherwise)."""
    if (image.os, image.architecture) != (base.os, base.architecture):
        return False
    if not image.variant or not base.variant:
        return True
    return _variant(image) == _variant(base)


def first_platform_match(entries: Iterable[Descriptor], want: Platform) -> Descriptor | None:
    """The first entry of `want`'s os and architecture, and of its variant when `want` names one.

    How pulls choose (the registry client, oci_pull). Builds choose with `match_platform`, which
    also reads arm64 as v8, falls back to an entry without a variant, and refuses an ambiguous
    choice; pulls keep their own rule until a change of which entry they pick is wanted.
    """
    for d in entries:
        p = d.platform
        if p is not None and (p.os, p.architecture) == (want.os, want.architecture) and (
            want.variant is None or p.variant == want.variant
        ):
            return d
    return None


def match_platform(entries: Iterable[Descriptor], want: Platform) -> Descriptor | None:
    """The entry of an index for `want`, or None when no entry, or more than one, fits.

    Same os and architecture, then: the same variant (arm64 means v8 unless it says otherwise,
    as in containerd); else an entry without a variant, which runs on any; else, when `want`
    names no variant, the one entry of that architecture.
    """
    same = [
        d for d in entries
        if d.platform is not None and d.platform.os == want.os
        and d.platform.architecture == want.architecture
    ]
    for candidates in (
        [d for d in same if d.platform and _variant(d.platform) == _variant(want)],
        [d for d in same if d.platform and not d.platform.variant],
        [] if want.variant else same,
    ):
        if candidates:
            return candidates[0] if len(candidates) == 1 else None
    return None
