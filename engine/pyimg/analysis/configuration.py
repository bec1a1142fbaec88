"""Configurations: the target platform a target is analysed for, and where its outputs go.

Bazel's model without its ceremony (docs/concepts.md, "Platforms"): a configuration is one
target platform. The default configuration is the running machine's platform and keeps the
output paths pyimg always had (`pyimg-out/<package>/...`); a platform asked for, by `--platforms`
or by an `oci_image_index`'s `platforms`, is a requested configuration whose outputs go under
`pyimg-out/platforms/<os>-<arch>[-<variant>]/<package>/...`, so that each configuration has its
own output paths and therefore its own action keys.

A target is analysed in a requested configuration only when its analysis can depend on it: it
has a select(), its rule reads the platform (`rule(fragments = ["platform"])`), or a dependency
is itself configured. Every other target is analysed once, in the default configuration, so
that its actions (a layer that is the same for every platform) run once for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyimg.oci.model import Platform
from pyimg.oci.platforms import host_platform, parse_platform

__all__ = ["CONFIGURATIONS_DIR", "Configuration", "default_configuration", "requested_configuration"]

# Under pyimg-out/: the outputs of the requested configurations, one directory each.
CONFIGURATIONS_DIR = "platforms"


@dataclass(frozen=True)
class Configuration:
    """One target platform. `requested`: asked for by `--platforms` or a transition, rather than
    the default (the running machine's platform, with the output paths of a plain build)."""

    platform: Platform
    requested: bool = False

    @property
    def name(self) -> str:
        """`linux-arm64-v8`: the directory of its outputs, and what reports show."""
        p = self.platform
        return "-".join(x for x in (p.os, p.architecture, p.variant) if x)

    @property
    def out_subdir(self) -> str:
        """Where its outputs go under pyimg-out/: "" for the default configuration."""
        return f"{CONFIGURATIONS_DIR}/{self.name}" if self.requested else ""

    def key(self, label: str) -> str:
        """The configured target's name: the label in the default configuration, else the
        label and the platform, like `//app:image [linux/arm64/v8]`."""
        return f"{label} [{self.platform}]" if self.requested else label


def default_configuration() -> Configuration:
    """The running machine's platform (select() in a plain build resolves against it)."""
    return Configuration(host_platform(), requested=False)


def requested_configuration(text: str, what: str) -> Configuration:
    """A configuration asked for as `os/architecture[/variant]`, checked against the OCI values
    (a UserInputError starting with `what` when it is not one)."""
    return Configuration(parse_platform(text, what), requested=True)
