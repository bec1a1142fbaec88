"""External inputs against a real docker-registry: push, oci_pull by digest and by tag + lock,
build on the pulled base, push to another repository (blobs mounted), offline builds."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "registry"))
from pyimg.oci.validate import validate_layout  # noqa: E402
from realtools import podman_env, require  # noqa: E402
from regtestlib import make_image, skopeo, start_registry  # noqa: E402
from workspace_helpers import Workspace  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory):
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


@pytest.fixture(autouse=True)
def _no_docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))


def _flags(ws: Workspace) -> list[str]:
    return ["--disk-cache", str(ws.cache)]


def _push_base(ws: Workspace, host: str, repo: str = "team/base") -> str:
    ws.write("app/hello.txt", "hello\n")
    ws.write(
        "app/BUILD.pyimg",
        f"""
        pkg_tar(name = "layer", srcs = ["hello.txt"], package_dir = "/app")
        oci_image(name = "image", tars = [":layer"], entrypoint = ["/bin/true"])
        oci_push(name = "push", image = ":image", repository = "{host}/{repo}", remote_tags = ["v1"])
        """,
    )
    r = ws.run("run", "//app:push")
    assert r.code == 0, r.err
    digest = r.out.strip().splitlines()[-1]
    assert digest == (ws.out("app/image.digest")).read_text().strip()
    validate_layout(ws.out("app/image"))
    return digest


def _consumer(ws: Workspace, host: str, digest: str | None, repo: str = "team/base") -> None:
    pin = f'digest = "{digest}"' if digest else 'tag = "v1"'
    ws.write("MODULE.pyimg", f'oci_pull(name = "base", image = "{host}/{repo}", {pin})\n')
    ws.write("svc/x.txt", "x\n")
    ws.write(
        "svc/BUILD.pyimg",
        """
        pkg_tar(name = "layer", srcs = ["x.txt"])
        oci_image(name = "image", base = "@base", tars = [":layer"])
        """,
    )


def test_push_pull_lock_build_push_mounts(registry, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    ws1 = Workspace(tmp_path / "ws1", cache)
    digest = _push_base(ws1, registry.host)
    if shutil.which("skopeo"):
        out = subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", f"docker://{registry.host}/team/base:v1"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert json.loads(out)["Digest"] == digest

    # By tag: unpinned until `pyimg lock`.
    ws2 = Workspace(tmp_path / "ws2", tmp_path / "cache2")
    _consumer(ws2, registry.host, None)
    r = ws2.run("build", "//svc:image")
    assert r.code == 2
    assert "MODULE.pyimg:1" in r.err and "pyimg lock" in r.err
    r = ws2.run("lock", *_flags(ws2))
    assert r.code == 0, r.err
    lock = json.loads((ws2.root / "pyimg.lock").read_text())
    assert lock["repositories"]["base"]["digest"] == digest
    assert lock["repositories"]["base"]["tag"] == "v1"
    r = ws2.run("build", "//svc:image")
    assert r.code == 0, r.err
    validate_layout(ws2.out("svc/image"))
    built = ws2.out("svc/image.digest").read_text().strip()

    # By digest, in a third workspace sharing ws2's cache: nothing is downloaded again.
    ws3 = Workspace(tmp_path / "ws3", tmp_path / "cache2")
    _consumer(ws3, registry.host, digest)
    r = ws3.run("build", "--offline", "//svc:image")
    assert r.code == 0, r.err
    assert ws3.out("svc/image.digest").read_text().strip() == built

    # Push to another repository of the same registry: the base layer is mounted.
    r = ws3.run(
        "push",
        *_flags(ws3),
        "//svc:image",
        "--repository",
        f"{registry.host}/team/svc",
        "--tag",
        "v2",
    )
    assert r.code == 0, r.err
    assert r.out.strip().splitlines()[-1] == built
    assert "1 mounted" in r.err and "2 blobs uploaded" in r.err
    # Unchanged: uploads nothing.
    r = ws3.run("push", *_flags(ws3), "//svc:image", "--repository", f"{registry.host}/team/svc")
    assert r.code == 0, r.err
    assert "0 blobs uploaded" in r.err
    # The same push again: nothing changed since, so the build is not even verified.
    r = ws3.run("push", *_flags(ws3), "//svc:image", "--repository", f"{registry.host}/team/svc")
    assert r.code == 0, r.err
    assert "nothing changed since the last build" in r.err and "0 blobs uploaded" in r.err
    assert r.out.strip().splitlines()[-1] == built


def test_offline_cold_cache_names_what_is_missing(registry, tmp_path: Path) -> None:
    ws1 = Workspace(tmp_path / "ws1", tmp_path / "cache1")
    digest = _push_base(ws1, registry.host, "team/offline")
    ws = Workspace(tmp_path / "ws", tmp_path / "cold")
    ws.write(
        "MODULE.pyimg",
        f'oci_pull(name = "base", image = "{registry.host}/team/offline", digest = "{digest}")\n',
    )
    ws.write("svc/BUILD.pyimg", 'oci_image(name = "image", base = "@base")\n')
    r = ws.run("build", "--offline", "//svc:image")
    assert r.code == 1
    assert "MODULE.pyimg:1" in r.err and "pyimg fetch" in r.err and digest in r.err
    r = ws.run("fetch", *_flags(ws))
    assert r.code == 0, r.err
    shutil.rmtree(ws.cache / "output_bases")  # only the repository cache survives
    r = ws.run("build", "--offline", "//svc:image")
    assert r.code == 0, r.err
    validate_layout(ws.out("svc/image"))


def test_index_lock_records_platforms(registry, tmp_path: Path) -> None:
    from regtestlib import make_index

    layout = tmp_path / "idx"
    make_index(layout, tag="multi")
    from pyimg.registry.client import push_layout

    index_digest = str(push_layout(layout, f"{registry.host}/team/multi:multi"))
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    ws.write(
        "MODULE.pyimg",
        f'oci_pull(name = "m", image = "{registry.host}/team/multi", '
        'tag = "multi", platforms = ["linux/arm64"])\n',
    )
    ws.write("svc/BUILD.pyimg", 'oci_image(name = "image", base = "@m")\n')
    assert ws.run("lock", *_flags(ws)).code == 0
    entry = json.loads((ws.root / "pyimg.lock").read_text())["repositories"]["m"]
    assert entry["digest"] == index_digest
    assert set(entry["platforms"]) == {"linux/amd64", "linux/arm64"}
    r = ws.run("build", "//svc:image")
    assert r.code == 0, r.err
    config = validate_layout(ws.out("svc/image"))
    assert config  # one entry, valid
    manifest_digest = ws.out("svc/image.digest").read_text().strip()
    assert manifest_digest != index_digest


def test_a_platform_the_pull_lacks_names_the_declaration(registry, tmp_path: Path) -> None:
    # Built for arm64 on an oci_pull of the amd64 entry only: the error is at analysis, names
    # the declaration's MODULE.pyimg line and what it pulls, and says how to add the platform;
    # once added, `@m` is that platform's entry of the index.
    from pyimg.registry.client import push_layout
    from regtestlib import make_index

    layout = tmp_path / "idx"
    make_index(layout, tag="multi")
    index_digest = str(push_layout(layout, f"{registry.host}/team/multi2:multi"))
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    pull = f'oci_pull(name = "m", image = "{registry.host}/team/multi2", digest = "{index_digest}"'
    ws.write("MODULE.pyimg", "# bases\n" + pull + ")\n")
    ws.write("svc/BUILD.pyimg", 'oci_image(name = "image", base = "@m")\n')
    r = ws.run("build", *_flags(ws), "--platforms", "linux/arm64", "//svc:image")
    assert r.code != 0
    assert "MODULE.pyimg:2:1" in r.err, r.err
    assert "oci_pull 'm'" in r.err and "linux/amd64" in r.err, r.err
    assert 'platforms = ["linux/amd64", "linux/arm64"]' in r.err, r.err
    assert "0 images" not in r.err and "Traceback" not in r.err, r.err
    ws.write("MODULE.pyimg", "# bases\n" + pull + ', platforms = ["linux/amd64", "linux/arm64"])\n')
    r = ws.run("build", *_flags(ws), "--platforms", "linux/arm64", "//svc:image")
    assert r.code == 0, r.err
    out = ws.out("platforms/linux-arm64/svc/image")
    validate_layout(out)
    (entry,) = json.loads((out / "index.json").read_text())["manifests"]
    manifest = json.loads((out / "blobs/sha256" / entry["digest"][7:]).read_text())
    config = json.loads((out / "blobs/sha256" / manifest["config"]["digest"][7:]).read_text())
    assert config["architecture"] == "arm64"


def test_a_platform_a_single_image_pull_is_not_names_the_declaration(
    registry, tmp_path: Path
) -> None:
    # An oci_pull of one amd64 image (no index) built for arm64: the platform its config says
    # is checked at analysis, and the error names the declaration and that it is one image.
    from pyimg.registry.client import push_layout
    from regtestlib import make_image

    layout = tmp_path / "one"
    make_image(layout, tag="one", arch="amd64")
    digest = str(push_layout(layout, f"{registry.host}/team/one:one"))
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    ws.write("MODULE.pyimg", f'oci_pull(name = "one", image = "{registry.host}/team/one", '
             f'digest = "{digest}")\n')
    ws.write("svc/BUILD.pyimg", 'oci_image(name = "image", base = "@one")\n')
    r = ws.run("build", *_flags(ws), "--platforms", "linux/arm64", "//svc:image")
    assert r.code != 0 and "Traceback" not in r.err, r.err
    assert "MODULE.pyimg:1:1: oci_pull 'one'" in r.err, r.err
    assert "only linux/amd64" in r.err and "pinned to a single image" in r.err, r.err
    assert ws.run("build", *_flags(ws), "--platforms", "linux/amd64", "//svc:image").code == 0


def _base_layers(layout: Path) -> list[str]:
    """The layer digests of the image in `layout` (its only index.json entry)."""
    index = json.loads((layout / "index.json").read_text())
    (entry,) = index["manifests"]
    manifest = json.loads((layout / "blobs/sha256" / entry["digest"][7:]).read_text())
    return [d["digest"] for d in manifest["layers"]]


def _in_store(ws: Workspace, digest: str) -> bool:
    hexd = digest.split(":", 1)[1]
    return (ws.cache / "cas" / "sha256" / hexd[:2] / hexd).is_file()


def _lazy_consumer(registry, tmp_path: Path, repo: str) -> tuple[Workspace, str]:
    """A base pushed to `repo` by one workspace, and a consumer workspace with a cold cache;
    returns the consumer and the base's (one) layer digest."""
    ws1 = Workspace(tmp_path / "ws1", tmp_path / "cache1")
    digest = _push_base(ws1, registry.host, repo)
    (base_layer,) = _base_layers(ws1.out("app/image"))
    ws = Workspace(tmp_path / "ws", tmp_path / "cold")
    _consumer(ws, registry.host, digest, repo)
    return ws, base_layer


def test_base_layers_are_fetched_only_when_an_output_needs_their_bytes(
    registry, tmp_path: Path
) -> None:
    # A push to the same registry needs no base layer bytes: mounted, never downloaded.
    ws, base_layer = _lazy_consumer(registry, tmp_path, "team/lazy")
    r = ws.run("push", *_flags(ws), "//svc:image", "--repository", f"{registry.host}/team/lazy-svc")
    assert r.code == 0, r.err
    pushed = r.out.strip().splitlines()[-1]
    assert "1 mounted" in r.err, r.err
    assert not _in_store(ws, base_layer)
    layout = ws.out("svc/image")
    assert base_layer in _base_layers(layout)
    assert not (layout / "blobs/sha256" / base_layer[7:]).exists()  # sparse, as the spec allows
    out = skopeo("inspect", "--no-tags", "--tls-verify=false",
                 f"docker://{registry.host}/team/lazy-svc@{pushed}")
    assert json.loads(out.stdout)["Digest"] == pushed

    # Writing the layout needs the bytes: `pyimg build` fetches the layer and completes it.
    r = ws.run("build", "//svc:image")
    assert r.code == 0, r.err
    assert "Fetching 1 base image layer for pyimg-out/svc/image" in r.err, r.err
    assert _in_store(ws, base_layer)
    validate_layout(layout)
    assert ws.out("svc/image.digest").read_text().strip() == pushed
    r = ws.run("build", "//svc:image")  # and keeps it complete
    assert r.code == 0, r.err
    validate_layout(layout)


def test_run_of_an_oci_push_mounts_lazy_layers(registry, tmp_path: Path) -> None:
    ws, base_layer = _lazy_consumer(registry, tmp_path, "team/lazyrun")
    ws.write(
        "svc/BUILD.pyimg",
        f"""
        pkg_tar(name = "layer", srcs = ["x.txt"])
        oci_image(name = "image", base = "@base", tars = [":layer"])
        oci_push(name = "push", image = ":image", repository = "{registry.host}/team/lazyrun-svc")
        """,
    )
    r = ws.run("run", "//svc:push")
    assert r.code == 0, r.err
    assert "1 mounted" in r.err, r.err
    assert not _in_store(ws, base_layer)
    assert r.out.strip().splitlines()[-1] == ws.out("svc/image.digest").read_text().strip()


def test_loading_an_image_fetches_its_base_layers(registry, tmp_path: Path) -> None:
    import tarfile

    ws, base_layer = _lazy_consumer(registry, tmp_path, "team/lazyload")
    ws.write(
        "svc/BUILD.pyimg",
        """
        pkg_tar(name = "layer", srcs = ["x.txt"])
        oci_image(name = "image", base = "@base", tars = [":layer"])
        oci_load(name = "load", image = ":image", repo_tags = ["example.com/svc:1"])
        """,
    )
    r = ws.run("build", "//svc:load")
    assert r.code == 0, r.err
    tarball = next(p for p in ws.out("svc").iterdir() if p.name.startswith("load"))
    with tarfile.open(tarball) as tar:
        assert f"blobs/sha256/{base_layer[7:]}" in tar.getnames()
    assert _in_store(ws, base_layer)


def test_push_to_another_registry_fetches_the_layers_it_cannot_mount(
    registry, tmp_path: Path
) -> None:
    other = start_registry(tmp_path / "other-registry")
    try:
        ws, base_layer = _lazy_consumer(registry, tmp_path, "team/lazyx")
        r = ws.run("push", *_flags(ws), "//svc:image", "--repository", f"{other.host}/copy/svc")
        assert r.code == 0, r.err
        assert "0 mounted" in r.err and "3 blobs uploaded" in r.err, r.err
        assert _in_store(ws, base_layer)  # fetched from the base's registry, verified, kept
        pulled = tmp_path / "pulled"
        skopeo("copy", "--src-tls-verify=false",
               f"docker://{other.host}/copy/svc@{r.out.strip().splitlines()[-1]}",
               f"oci:{pulled}:latest")
        assert base_layer in _base_layers(pulled)
        validate_layout(pulled)
    finally:
        other.stop()


def test_image_on_a_docker_typed_base_runs_in_podman(registry, tmp_path: Path) -> None:
    """A base with Docker v2 schema 2 media types: pulled, built on, pushed, then pulled and
    run by podman, and copied by skopeo."""
    require("podman", "runc", "skopeo")
    from pyimg.registry.client import RegistryClient

    src = tmp_path / "dbase"
    base = make_image(src, layers=[{"bin/busybox": Path("/bin/busybox").read_bytes()}],
                      executables=frozenset({"bin/busybox"}), docker_types=True)
    RegistryClient().push_layout(src, f"{registry.host}/team/dbase:v1")
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    ws.write("MODULE.pyimg",
             f'oci_pull(name = "base", image = "{registry.host}/team/dbase", '
             f'digest = "{base["digest"]}")\n')
    ws.write("svc/msg.txt", "hello from a docker-typed base\n")
    ws.write(
        "svc/BUILD.pyimg",
        """
        pkg_tar(name = "layer", srcs = ["msg.txt"], package_dir = "/app")
        oci_image(name = "image", base = "@base", tars = [":layer"],
                  entrypoint = ["/bin/busybox", "cat", "/app/msg.txt"])
        """,
    )
    repo = f"{registry.host}/team/dsvc"
    r = ws.run("push", *_flags(ws), "//svc:image", "--repository", repo, "--tag", "v1")
    assert r.code == 0, r.err
    digest = r.out.strip().splitlines()[-1]
    assert json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{repo}:v1").stdout)[
        "Digest"] == digest
    copied = tmp_path / "copied"
    skopeo("copy", "--src-tls-verify=false", f"docker://{repo}:v1", f"oci:{copied}:latest")
    validate_layout(copied)

    env = podman_env(tmp_path / "podman")
    env.pop("DOCKER_CONFIG")  # podman insists that a named config file exists
    pull = subprocess.run(["podman", "pull", "--tls-verify=false", f"{repo}:v1"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert pull.returncode == 0, pull.stderr
    run = subprocess.run(["podman", "run", "--rm", f"{repo}:v1"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "hello from a docker-typed base\n"


def test_incremental_rebuild_on_a_lazy_base(registry, tmp_path: Path, monkeypatch) -> None:
    """A source edit re-keys the image through the incremental path: the base stays a lazy
    input, and writing the layout fetches its layer again when the store has lost it."""
    import pyimg.build.incremental as incremental

    ws, base_layer = _lazy_consumer(registry, tmp_path, "team/lazyincr")
    r = ws.run("build", "//svc:image")
    assert r.code == 0, r.err
    first = ws.out("svc/image.digest").read_text()
    runs: list[object] = []
    real_run = incremental._run
    monkeypatch.setattr(incremental, "_run", lambda *a: runs.append(real_run(*a)) or runs[-1])
    hexd = base_layer[7:]
    (ws.cache / "cas" / "sha256" / hexd[:2] / hexd).unlink()
    ws.write("svc/x.txt", "changed\n")
    r = ws.run("build", "//svc:image")
    assert r.code == 0, r.err
    assert runs == [0]  # the incremental path did the build
    assert ws.out("svc/image.digest").read_text() != first
    validate_layout(ws.out("svc/image"))
    assert _in_store(ws, base_layer)
