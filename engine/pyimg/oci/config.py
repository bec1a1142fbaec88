"""The image config (config.*, rootfs.diff_ids, history): derive a new config from a base one."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyimg.core.digest import Digest
from pyimg.errors import UserInputError
from pyimg.oci.model import Manifest, Platform

__all__ = [
    "DEFAULT_CREATED",
    "ConfigChanges",
    "apply_config",
    "config_platform",
    "expand_env",
    "layer_diff_ids",
    "scratch_config",
]

DEFAULT_CREATED = "1970-01-01T00:00:00Z"
_VAR = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


@dataclass(frozen=True)
class ConfigChanges:
    """What an `oci_image` changes in its base's config. None means "keep the base's value".

    Mappings are stored as sorted tuples of pairs so that the value is hashable and ordered.
    """

    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: tuple[tuple[str, str], ...] = ()
    workdir: str | None = None
    user: str | None = None
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    stop_signal: str | None = None
    os: str | None = None
    architecture: str | None = None
    variant: str | None = None
    created: str = DEFAULT_CREATED


def scratch_config(os: str = "linux", architecture: str = "amd64") -> dict[str, Any]:
    """The config of an image with no base ("scratch")."""
    return {
        "architecture": architecture,
        "os": os,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": []},
        "history": [],
    }


def expand_env(value: str, env: Mapping[str, str]) -> str:
    """Expand `$VAR` and `${VAR}` from `env` (unknown names expand to ""); `$$` is a literal `$`."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1) or m.group(2), "")

    return _VAR.sub(sub, value)


def _env_map(env_list: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in env_list:
        key, _, val = item.partition("=")
        out[key] = val
    return out


def _port(port: str) -> str:
    port = str(port)
    num, sep, proto = port.partition("/")
    if (
        not num.isdigit()
        or not 0 < int(num) < 65536
        or (sep and proto not in ("tcp", "udp", "sctp"))
    ):
        raise UserInputError(f"exposed_ports: bad port {port!r} (expected e.g. '8080' or '53/udp')")
    return f"{int(num)}/{proto or 'tcp'}"


def apply_config(
    base: Mapping[str, Any] | None,
    changes: ConfigChanges,
    new_diff_ids: Sequence[Digest],
) -> dict[str, Any]:
    """A new config: `base` (or scratch) with `changes` applied and `new_diff_ids` appended.

    Follows Docker: setting entrypoint without cmd clears the base's cmd. Env values expand
    `$VAR` from the base's env only, so the result does not depend on the order of `env`; base
    variables keep their position and new ones are appended in sorted order. One history entry is
    added per new layer with the fixed `created` time and no host information. Unknown base
    fields are kept as they are.
    """
    if not _RFC3339.match(changes.created):
        raise UserInputError(f"created: not an RFC 3339 time: {changes.created!r}")
    cfg: dict[str, Any] = copy.deepcopy(dict(base)) if base is not None else scratch_config()
    for key, value in (
        ("os", changes.os),
        ("architecture", changes.architecture),
        ("variant", changes.variant),
    ):
        if value:
            cfg[key] = value
    cfg.setdefault("os", "linux")
    cfg.setdefault("architecture", "amd64")
    cfg["created"] = changes.created
    inner = cfg.get("config")
    inner = dict(inner) if isinstance(inner, Mapping) else {}

    if changes.entrypoint is not None:
        inner["Entrypoint"] = list(changes.entrypoint)
        if changes.cmd is None:
            inner.pop("Cmd", None)
    if changes.cmd is not None:
        inner["Cmd"] = list(changes.cmd)

    if changes.env:
        base_env = _env_map(inner.get("Env") or [])
        merged = dict(base_env)
        for key, value in changes.env:
            if not key or "=" in key:
                raise UserInputError(f"env: bad variable name {key!r}")
            merged[key] = expand_env(value, base_env)
        order = [k for k in base_env] + sorted(k for k in merged if k not in base_env)
        inner["Env"] = [f"{k}={merged[k]}" for k in order]

    if changes.workdir is not None:
        inner["WorkingDir"] = changes.workdir
    if changes.user is not None:
        inner["User"] = changes.user
    if changes.stop_signal is not None:
        inner["StopSignal"] = changes.stop_signal
    if changes.exposed_ports:
        ports = dict(inner.get("ExposedPorts") or {})
        for port in changes.exposed_ports:
            ports[_port(port)] = {}
        inner["ExposedPorts"] = ports
    if changes.volumes:
        volumes = dict(inner.get("Volumes") or {})
        for volume in changes.volumes:
            volumes[volume] = {}
        inner["Volumes"] = volumes
    if changes.labels:
        labels = dict(inner.get("Labels") or {})
        labels.update(changes.labels)
        inner["Labels"] = labels
    cfg["config"] = inner

    rootfs = cfg.get("rootfs")
    diff_ids = list(rootfs.get("diff_ids") or []) if isinstance(rootfs, Mapping) else []
    diff_ids.extend(str(d) for d in new_diff_ids)
    cfg["rootfs"] = {"type": "layers", "diff_ids": diff_ids}
    history = list(cfg.get("history") or [])
    history.extend({"created": changes.created, "created_by": "pyimg"} for _ in new_diff_ids)
    cfg["history"] = history
    return cfg


def layer_diff_ids(cfg: Mapping[str, Any], manifest: Manifest, where: str) -> list[Digest]:
    """The rootfs.diff_ids of `manifest`'s config `cfg`: one per layer, in the layers' order.

    A config without them, or listing another number than the manifest has layers, does not
    describe its image: a UserInputError that starts with `where` (naming the manifest).
    """
    config = f"{where}: config {manifest.config.digest}"
    rootfs = cfg.get("rootfs")
    if not isinstance(rootfs, Mapping) or not isinstance(rootfs.get("diff_ids"), list):
        raise UserInputError(f"{config} lacks rootfs.diff_ids")
    try:
        diff_ids = [Digest.parse(str(d)) for d in rootfs["diff_ids"]]
    except ValueError as e:
        raise UserInputError(f"{config}: rootfs.diff_ids: {e}") from None
    if len(diff_ids) != len(manifest.layers):
        raise UserInputError(
            f"{where} has {len(manifest.layers)} layers but its config "
            f"{manifest.config.digest} lists {len(diff_ids)} diff_ids"
        )
    return diff_ids


def config_platform(cfg: Mapping[str, Any]) -> Platform:
    """The platform an image config declares (os, architecture, variant, os.version, os.features)."""
    return Platform.from_json(cfg)
