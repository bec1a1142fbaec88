"""Config derivation: Docker's entrypoint/cmd rule, env expansion, merges, history, diff_ids."""

from __future__ import annotations

import pytest
from pyimg.core.digest import digest_bytes
from pyimg.errors import UserInputError
from pyimg.oci.config import ConfigChanges, apply_config, config_platform, expand_env

BASE = {
    "architecture": "arm64",
    "os": "linux",
    "variant": "v8",
    "config": {
        "Env": ["PATH=/usr/bin", "HOME=/root"],
        "Cmd": ["sh"],
        "Entrypoint": ["/init"],
        "Labels": {"a": "1"},
        "ExposedPorts": {"22/tcp": {}},
        "Healthcheck": {"Test": ["NONE"]},
    },
    "rootfs": {"type": "layers", "diff_ids": [str(digest_bytes(b"base"))]},
    "history": [{"created_by": "base"}],
}


def test_scratch_defaults() -> None:
    cfg = apply_config(None, ConfigChanges(), [digest_bytes(b"x")])
    assert cfg["os"] == "linux" and cfg["architecture"] == "amd64"
    assert cfg["created"] == "1970-01-01T00:00:00Z"
    assert cfg["rootfs"] == {"type": "layers", "diff_ids": [str(digest_bytes(b"x"))]}
    assert cfg["history"] == [{"created": "1970-01-01T00:00:00Z", "created_by": "pyimg"}]


def test_entrypoint_without_cmd_clears_base_cmd() -> None:
    cfg = apply_config(BASE, ConfigChanges(entrypoint=("/app",)), [])
    assert cfg["config"]["Entrypoint"] == ["/app"] and "Cmd" not in cfg["config"]
    cfg = apply_config(BASE, ConfigChanges(entrypoint=("/app",), cmd=("--x",)), [])
    assert cfg["config"]["Cmd"] == ["--x"]
    cfg = apply_config(BASE, ConfigChanges(cmd=("bash",)), [])
    assert cfg["config"]["Entrypoint"] == ["/init"] and cfg["config"]["Cmd"] == ["bash"]


def test_env_expands_from_base_and_keeps_order() -> None:
    changes = ConfigChanges(
        env=(("PATH", "/app/bin:$PATH"), ("A", "${HOME}/a"), ("Z", "$NOPE-$$")),
    )
    cfg = apply_config(BASE, changes, [])
    assert cfg["config"]["Env"] == ["PATH=/app/bin:/usr/bin", "HOME=/root", "A=/root/a", "Z=-$"]


def test_merges_and_keeps_unknown_fields() -> None:
    changes = ConfigChanges(
        exposed_ports=("8080", "53/udp"),
        volumes=("/data",),
        labels=(("b", "2"),),
        workdir="/w",
        user="1000:1000",
        stop_signal="SIGTERM",
        architecture="amd64",
        variant=None,
        created="2024-01-02T03:04:05Z",
    )
    cfg = apply_config(BASE, changes, [digest_bytes(b"new")])
    inner = cfg["config"]
    assert inner["ExposedPorts"] == {"22/tcp": {}, "8080/tcp": {}, "53/udp": {}}
    assert inner["Volumes"] == {"/data": {}}
    assert inner["Labels"] == {"a": "1", "b": "2"}
    assert (inner["WorkingDir"], inner["User"], inner["StopSignal"]) == (
        "/w",
        "1000:1000",
        "SIGTERM",
    )
    assert inner["Healthcheck"] == {"Test": ["NONE"]}
    assert cfg["architecture"] == "amd64" and cfg["variant"] == "v8"
    assert len(cfg["rootfs"]["diff_ids"]) == 2
    assert cfg["history"][-1] == {"created": "2024-01-02T03:04:05Z", "created_by": "pyimg"}
    assert BASE["config"]["Labels"] == {"a": "1"}  # the base is not mutated


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (ConfigChanges(exposed_ports=("http",)), "bad port"),
        (ConfigChanges(exposed_ports=("80/xtp",)), "bad port"),
        (ConfigChanges(env=(("A=B", "x"),)), "bad variable name"),
        (ConfigChanges(created="yesterday"), "RFC 3339"),
    ],
)
def test_bad_changes(changes: ConfigChanges, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        apply_config(BASE, changes, [])


def test_expand_env_and_platform() -> None:
    assert expand_env("${A}$B-$C", {"A": "1", "B": "2"}) == "12-"
    p = config_platform(BASE)
    assert (p.os, p.architecture, p.variant) == ("linux", "arm64", "v8")
    assert str(p) == "linux/arm64/v8"
