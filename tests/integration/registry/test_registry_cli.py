"""The registry through the CLI, as a user meets it: `pyimg lock` (and `--update`), builds on
`oci_pull`, `pyimg push` of an index, basic auth from `--registry-config` and a credential helper,
and faults injected by a loopback proxy while locking and building."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from pyimg.oci.validate import validate_layout
from pyimg.registry.auth import CredentialStore
from pyimg.registry.client import RegistryClient
from regtestlib import FaultProxy, make_image, skopeo
from workspace_helpers import Workspace

pytestmark = pytest.mark.slow

PASSWORD = "wonderland"


def _consumer(tmp_path: Path, image: str, name: str = "ws") -> Workspace:
    """A workspace building on `oci_pull(image, tag = "v1")`, with its own cold cache."""
    ws = Workspace(tmp_path / name, tmp_path / f"{name}-cache")
    ws.write("MODULE.pyimg", f'oci_pull(name = "base", image = "{image}", tag = "v1")\n')
    ws.write("svc/x.txt", "x\n")
    ws.write(
        "svc/BUILD.pyimg",
        """
        pkg_tar(name = "layer", srcs = ["x.txt"])
        oci_image(name = "image", base = "@base", tars = [":layer"])
        """,
    )
    return ws


def _locked_digest(ws: Workspace) -> str:
    return json.loads((ws.root / "pyimg.lock").read_text())["repositories"]["base"]["digest"]


def _cache(ws: Workspace) -> list[str]:
    return ["--disk-cache", str(ws.cache)]


def test_lock_update_moves_only_the_named_entry(registry, tmp_path: Path) -> None:
    first = make_image(tmp_path / "a", layers=[{"v": b"1"}])
    RegistryClient().push_layout(tmp_path / "a", f"{registry.host}/team/moving:v1")
    ws = _consumer(tmp_path, f"{registry.host}/team/moving")
    assert ws.run("lock", *_cache(ws)).code == 0
    assert _locked_digest(ws) == first["digest"]

    second = make_image(tmp_path / "b", layers=[{"v": b"2"}])
    RegistryClient().push_layout(tmp_path / "b", f"{registry.host}/team/moving:v1")
    r = ws.run("lock", *_cache(ws))  # the entry still matches its declaration: kept
    assert r.code == 0 and "changed: nothing" in r.err, r.err
    assert _locked_digest(ws) == first["digest"]
    r = ws.run("lock", *_cache(ws), "--update", "base")
    assert r.code == 0 and "changed: @base" in r.err, r.err
    assert _locked_digest(ws) == second["digest"]
    r = ws.run("build", "//svc:image")
    assert r.code == 0, r.err
    validate_layout(ws.out("svc/image"))

    r = ws.run("lock", *_cache(ws), "--update", "bsae")
    assert r.code == 2 and "did you mean '@base'" in r.err, r.err


def test_push_an_index_pushes_every_image(registry, tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    ws.write("a.txt", "a\n")
    ws.write(
        "BUILD.pyimg",
        """
        pkg_tar(name = "layer", srcs = ["a.txt"])
        oci_image(name = "amd64", tars = [":layer"], architecture = "amd64")
        oci_image(name = "arm64", tars = [":layer"], architecture = "arm64")
        oci_image_index(name = "index", images = [":amd64", ":arm64"])
        """,
    )
    repo = f"{registry.host}/team/multi-cli"
    r = ws.run("push", *_cache(ws), "//:index", "--repository", repo, "--tag", "v1")
    assert r.code == 0, r.err
    digest = r.out.strip().splitlines()[-1]
    assert digest == ws.out("index.digest").read_text().strip()
    raw = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{repo}:v1").stdout)
    assert [m["platform"]["architecture"] for m in raw["manifests"]] == ["amd64", "arm64"]
    copied = tmp_path / "copied"
    skopeo("copy", "--all", "--src-tls-verify=false", f"docker://{repo}@{digest}",
           f"oci:{copied}:latest")
    validate_layout(copied)


def test_basic_auth_from_registry_config_and_credential_helper(
    basic_registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = basic_registry.host
    config = tmp_path / "config.json"
    auth = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    config.write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    base = make_image(tmp_path / "base", layers=[{"private": b"p"}])
    RegistryClient(credentials=CredentialStore(config)).push_layout(
        tmp_path / "base", f"{host}/private/base:v1"
    )

    ws = _consumer(tmp_path, f"{host}/private/base")
    denied = ws.run("lock", *_cache(ws))  # no credentials
    assert denied.code == 1 and host in denied.err and "HTTP 401" in denied.err, denied.err
    flags = [*_cache(ws), "--registry-config", str(config)]
    r = ws.run("lock", *flags)
    assert r.code == 0, r.err
    assert _locked_digest(ws) == base["digest"]
    r = ws.run("build", "--registry-config", str(config), "//svc:image")
    assert r.code == 0, r.err
    validate_layout(ws.out("svc/image"))
    r = ws.run("push", *flags, "//svc:image", "--repository", f"{host}/private/svc")
    assert r.code == 0, r.err
    assert "1 mounted" in r.err, r.err

    # The same through a credential helper named by $DOCKER_CONFIG/config.json.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-test"
    helper.write_text(
        "#!/bin/sh\nread server\n"
        f'[ "$server" = "{host}" ] || {{ echo "credentials not found"; exit 1; }}\n'
        f'echo \'{{"Username":"alice","Secret":"{PASSWORD}"}}\'\n'
    )
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    docker_config = tmp_path / "docker"
    docker_config.mkdir()
    (docker_config / "config.json").write_text(json.dumps({"credHelpers": {host: "test"}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config))
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    ws2 = _consumer(tmp_path, f"{host}/private/base", "ws2")
    r = ws2.run("lock", *_cache(ws2))
    assert r.code == 0, r.err
    r = ws2.run("build", "//svc:image")
    assert r.code == 0, r.err
    assert ws2.out("svc/image.digest").read_text() == ws.out("svc/image.digest").read_text()
    for said in (denied.err, r.err, r.out):  # credentials never reach the output
        assert PASSWORD not in said and auth not in said


@pytest.fixture
def proxy(registry):
    p = FaultProxy(registry.host)
    yield p
    p.close()


def test_faults_while_locking_and_building_are_retried_or_refused(
    registry, proxy, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    desc = make_image(src, layers=[{"big.bin": bytes(range(256)) * 4000}])
    RegistryClient().push_layout(src, f"{registry.host}/team/faulty-cli:v1")
    layer = json.loads((src / "blobs/sha256" / desc["digest"][7:]).read_bytes())["layers"][0]
    image = f"{proxy.host}/team/faulty-cli"

    ws = _consumer(tmp_path, image)
    proxy.faults = [("GET", "/manifests/", "503"), ("GET", "/manifests/", "429")]
    r = ws.run("lock", *_cache(ws))
    assert r.code == 0, r.err
    assert [f.split()[0] for f in proxy.injected] == ["503", "429"]

    # A dropped connection and a 500 on the layer: retried; the build gets the right bytes.
    proxy.faults = [("GET", layer["digest"], "drop"), ("GET", layer["digest"], "500")]
    r = ws.run("build", "//svc:image")
    assert r.code == 0, r.err
    assert len(proxy.injected) == 4
    validate_layout(ws.out("svc/image"))

    # Bytes that do not match the digest: refused, named, and never kept.
    bad = _consumer(tmp_path, image, "bad")
    (bad.root / "pyimg.lock").write_text((ws.root / "pyimg.lock").read_text())
    proxy.faults = [("GET", layer["digest"], "corrupt")]
    r = bad.run("build", "//svc:image")
    assert r.code == 1, r.err
    assert layer["digest"] in r.err and "MODULE.pyimg:1" in r.err, r.err
    hexd = layer["digest"][7:]
    assert not (bad.cache / "cas" / "sha256" / hexd[:2] / hexd).exists()
    r = bad.run("build", "//svc:image")  # the fault is gone: the same build now succeeds
    assert r.code == 0, r.err
    assert bad.out("svc/image.digest").read_text() == ws.out("svc/image.digest").read_text()
