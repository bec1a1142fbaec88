"""npm_lock and npm_layer through the CLI against an npm-style registry on loopback: lock, build,
the layout against `npm ci --ignore-scripts` of the same lock, --offline after fetch,
reproducibility, credentials from .npmrc, and every refusal (bad integrity, missing entry,
out-of-date lock, workspace links, a changed lock without `pyimg lock`)."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import stat
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from workspace_helpers import Workspace

sys.path.insert(0, str(Path(__file__).parents[1]))
from npm_fixtures import Pkg, Registry, integrity, serve, write_project  # noqa: E402

pytestmark = pytest.mark.slow

_BUILD = """
load("@pyimg//rules:defs.bzl", "npm_layer")

npm_layer(name = "modules", lock = "@npm//:lock", path = "/app/node_modules",
          platform = "linux/amd64")
oci_image(name = "image", tars = [":modules"])
"""


@pytest.fixture
def registry() -> Iterator[Registry]:
    with serve(Registry()) as r:
        yield r


def _workspace(tmp_path: Path, registry: Registry, name: str = "ws", version: int = 3,
               cache: Path | None = None) -> Workspace:
    ws = Workspace(tmp_path / name, cache or tmp_path / "cache")
    ws.write("MODULE.pyimg", """
        npm_lock(
            name = "npm",
            lock = "web/package-lock.json",
        )
        """)
    write_project(ws.root / "web", registry, version)
    ws.write("web/BUILD.pyimg", _BUILD)
    return ws


def _lock(ws: Workspace, *args: str) -> tuple[int, str]:
    r = ws.run("lock", "--disk-cache", str(ws.cache), *args)
    return r.code, r.err + r.out


def _listing(tar: Path) -> dict[str, tuple[str, int, str]]:
    """path -> (type, mode, content sha256 or link target)."""
    out = {}
    with tarfile.open(tar) as tf:
        for m in tf:
            if m.isdir():
                out[m.name] = ("dir", stat.S_IMODE(m.mode), "")
            elif m.issym():
                out[m.name] = ("symlink", 0, m.linkname)
            else:
                f = tf.extractfile(m)
                assert f is not None
                out[m.name] = ("file", stat.S_IMODE(m.mode), hashlib.sha256(f.read()).hexdigest())
    return out


def _tree_listing(root: Path) -> dict[str, tuple[str, int, str]]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            rel = "app/node_modules/" + p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = ("symlink", 0, os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", stat.S_IMODE(p.stat().st_mode), "")
            else:
                out[rel] = ("file", stat.S_IMODE(p.stat().st_mode),
                            hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def test_lock_build_layout(registry: Registry, tmp_path: Path) -> None:
    ws = _workspace(tmp_path, registry)
    r = ws.run("build", "//web:modules")
    assert r.code == 2 and "MODULE.pyimg:2:1" in r.err and "pyimg lock" in r.err, r.err
    code, err = _lock(ws)
    assert code == 0, err
    entry = json.loads((ws.root / "pyimg.lock").read_text())["repositories"]["npm"]
    lock_sha = hashlib.sha256((ws.root / "web/package-lock.json").read_bytes()).hexdigest()
    assert entry == {"digest": f"sha256:{lock_sha}", "kind": "npm_lock",
                     "lock": "web/package-lock.json", "packages": 8}
    r = ws.run("build", "//web:modules", "//web:image")
    assert r.code == 0, r.err
    from pyimg.oci.validate import validate_layout

    validate_layout(ws.out("web/image"))
    # oci_image streams the same tar from the rule's spec: its diff_id is the tar's digest.
    layout = ws.out("web/image")
    index = json.loads((layout / "index.json").read_text())
    blob = layout / "blobs/sha256"
    manifest = json.loads((blob / index["manifests"][0]["digest"][7:]).read_text())
    config = json.loads((blob / manifest["config"]["digest"][7:]).read_text())
    tar_sha = hashlib.sha256(ws.out("web/modules.tar").read_bytes()).hexdigest()
    assert config["rootfs"]["diff_ids"] == [f"sha256:{tar_sha}"]
    files = _listing(ws.out("web/modules.tar"))
    nm = "app/node_modules"
    assert files[f"{nm}/a/index.js"][0] == "file"
    assert files[f"{nm}/a/bin/cli.js"][1] == 0o755  # a bin: executable
    assert files[f"{nm}/a/package.json"][1] == 0o644
    assert files[f"{nm}/@s/x/x.js"][1] == 0o755
    assert files[f"{nm}/@s/x/lib/secret.js"][1] == 0o644  # 0600 in the tarball: npm's 0644
    assert files[f"{nm}/c/node_modules/a/index.js"][0] == "file"
    assert files[f"{nm}/.bin/a-cli"] == ("symlink", 0, "../a/bin/cli.js")
    assert files[f"{nm}/.bin/xx"] == ("symlink", 0, "../@s/x/x.js")
    assert files[f"{nm}/c/node_modules/.bin/a-cli"] == ("symlink", 0, "../a/bin/cli.js")
    assert f"{nm}/opt-linux/index.js" in files
    assert not any(p.startswith((f"{nm}/opt-darwin", f"{nm}/darwin-helper", f"{nm}/d/"))
                   for p in files), sorted(files)
    assert f"{nm}/.bin/d" not in files
    # The package-lock.json is an input: changed after a build (the no-op record), the next
    # build asks for `pyimg lock` rather than replaying the old layer.
    lock_file = ws.root / "web/package-lock.json"
    lock_file.write_text(lock_file.read_text() + "\n")
    r = ws.run("build", "//web:modules", "//web:image")
    assert r.code == 2 and "web/package-lock.json is not the one pyimg.lock recorded" in r.err, r.err
    assert _lock(ws)[0] == 0
    r = ws.run("build", "//web:modules", "//web:image")
    assert r.code == 0, r.err


def test_layout_matches_npm_ci(registry: Registry, tmp_path: Path) -> None:
    """The strongest check: the same lock installed by npm itself."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed (tools/setup --system installs nodejs and npm)")
    if platform.machine() not in ("x86_64", "amd64"):
        pytest.skip("npm ci filters os/cpu for the host; the test's layer is for linux/amd64")
    ws = _workspace(tmp_path, registry)
    assert _lock(ws)[0] == 0
    r = ws.run("build", "//web:modules")
    assert r.code == 0, r.err
    project = tmp_path / "npm-project"
    shutil.copytree(ws.root / "web", project)
    subprocess.run(
        ["sh", "-c", f"umask 022 && {npm} ci --ignore-scripts --omit=dev --no-audit --no-fund "
                     f"--cache {tmp_path / 'npm-cache'} --registry {registry.url}"],
        cwd=project, check=True, capture_output=True, timeout=300,
        env={**os.environ, "npm_config_update_notifier": "false"},
    )
    theirs = _tree_listing(project / "node_modules")
    theirs.pop("app/node_modules/.package-lock.json")  # npm's cache of the tree, not read by node
    ours = _listing(ws.out("web/modules.tar"))
    ours = {p: v for p, v in ours.items() if p.startswith("app/node_modules/")}
    assert ours == theirs


def test_node_requires_from_the_layer(registry: Registry, tmp_path: Path) -> None:
    """node itself resolves the laid-out tree: nested versions, scoped packages, .bin links."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (tools/setup --system installs nodejs)")
    ws = _workspace(tmp_path, registry)
    assert _lock(ws)[0] == 0
    assert ws.run("build", "//web:modules").code == 0
    root = tmp_path / "rootfs"
    with tarfile.open(ws.out("web/modules.tar")) as tf:
        tf.extractall(root, filter="tar")
    app = root / "app"
    out = subprocess.run(
        [node, "-e", "console.log(require('a'), require('c'), require('@s/x/x.js'), require('opt-linux'))"],
        cwd=app, capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.split() == ["a1", "a2", "x", "linux"]
    cli = subprocess.run([str(app / "node_modules/.bin/a-cli")], capture_output=True, text=True,
                         check=True, timeout=60, env={**os.environ, "PATH": f"{Path(node).parent}:/usr/bin:/bin"})
    assert cli.stdout == "a1\n"


def test_fetch_offline_and_shared_cache(registry: Registry, tmp_path: Path) -> None:
    ws = _workspace(tmp_path, registry)
    assert _lock(ws)[0] == 0
    r = ws.run("fetch", "--disk-cache", str(ws.cache))
    assert r.code == 0, r.err
    fetched = len(registry.requests)
    assert fetched == 8  # one per tarball, none for packuments
    # sha512 pins, stored under their sha256 through the SRI index.
    assert len(list((ws.cache / "sri" / "sha512").iterdir())) == 8
    r = ws.run("build", "--offline", "//web:image")
    assert r.code == 0, r.err
    # A second workspace on the same cache downloads nothing, offline.
    ws2 = _workspace(tmp_path, registry, "ws2", cache=ws.cache)
    shutil.copy(ws.root / "web/package-lock.json", ws2.root / "web/package-lock.json")
    assert _lock(ws2, "--offline")[0] == 0
    assert ws2.run("build", "--offline", "//web:image").code == 0
    assert len(registry.requests) == fetched
    cold = _workspace(tmp_path, registry, "cold", cache=tmp_path / "cold-cache")
    shutil.copy(ws.root / "web/package-lock.json", cold.root / "web/package-lock.json")
    assert _lock(cold)[0] == 0
    r = cold.run("build", "--offline", "//web:image")
    assert r.code == 1 and "MODULE.pyimg:2:1" in r.err and "--offline" in r.err, r.err
    assert "package 'node_modules/" in r.err


def test_reproducible_under_umask_tz_and_path(registry: Registry, tmp_path: Path) -> None:
    digests = []
    for i, (umask, tz) in enumerate(((0o022, "UTC"), (0o077, "Asia/Kolkata"))):
        ws = _workspace(tmp_path, registry, f"ws{i}", cache=tmp_path / f"cache{i}")
        if i:
            shutil.copy(tmp_path / "ws0/web/package-lock.json", ws.root / "web/package-lock.json")
        old_umask, old_tz = os.umask(umask), os.environ.get("TZ")
        os.environ["TZ"] = tz
        try:
            assert _lock(ws)[0] == 0
            r = ws.run("build", "//web:image")
            assert r.code == 0, r.err
        finally:
            os.umask(old_umask)
            if old_tz is None:
                os.environ.pop("TZ", None)
            else:
                os.environ["TZ"] = old_tz
        index = json.loads(ws.out("web/image/index.json").read_text())
        digests.append(index["manifests"][0]["digest"])
    assert digests[0] == digests[1]


def test_platform_from_the_configuration(registry: Registry, tmp_path: Path) -> None:
    """Without `platform`, the layer is for the platform the target is built for."""
    ws = _workspace(tmp_path, registry)
    ws.write("web/BUILD.pyimg", 'load("@pyimg//rules:defs.bzl", "npm_layer")\n'
                                'npm_layer(name = "modules", lock = "@npm//:lock")\n')
    assert _lock(ws)[0] == 0
    r = ws.run("build", "--platforms", "linux/arm64", "//web:modules")
    assert r.code == 0, r.err
    arm = _listing(ws.out("platforms/linux-arm64/web/modules.tar"))
    assert "app/node_modules/a/index.js" in arm
    assert not any("opt-linux" in p for p in arm)  # cpu x64 only
    r = ws.run("build", "--platforms", "linux/amd64", "//web:modules")
    assert r.code == 0, r.err
    assert "app/node_modules/opt-linux/index.js" in _listing(
        ws.out("platforms/linux-amd64/web/modules.tar"))


def test_lockfile_v2(registry: Registry, tmp_path: Path) -> None:
    ws = _workspace(tmp_path, registry, version=2)
    assert _lock(ws)[0] == 0
    assert ws.run("build", "//web:modules").code == 0


def test_bad_integrity_refused(registry: Registry, tmp_path: Path) -> None:
    ws = _workspace(tmp_path, registry)
    assert _lock(ws)[0] == 0
    good = registry.files["/a/-/a-1.0.0.tgz"]
    registry.files["/a/-/a-1.0.0.tgz"] = Pkg("a", "1.0.0", {"index.js": "evil"}).tarball()
    r = ws.run("build", "//web:modules")
    assert r.code == 1
    assert "MODULE.pyimg:2:1" in r.err and "npm_lock 'npm'" in r.err, r.err
    assert "node_modules/a" in r.err and integrity(good) in r.err
    assert integrity(registry.files["/a/-/a-1.0.0.tgz"]) in r.err


def test_out_of_date_and_missing_entry_refused(registry: Registry, tmp_path: Path) -> None:
    ws = _workspace(tmp_path, registry)
    assert _lock(ws)[0] == 0
    pj = json.loads((ws.root / "web/package.json").read_text())
    pj["dependencies"]["a"] = "^1.1.0"
    (ws.root / "web/package.json").write_text(json.dumps(pj))
    r = ws.run("build", "//web:modules")
    assert r.code == 2 and "out of date" in r.err and "'a'" in r.err and "^1.1.0" in r.err, r.err
    code, err = _lock(ws)
    assert code == 2 and "out of date" in err
    pj["dependencies"]["a"] = "1.0.0"
    (ws.root / "web/package.json").write_text(json.dumps(pj))
    lock = json.loads((ws.root / "web/package-lock.json").read_text())
    del lock["packages"]["node_modules/c/node_modules/a"]
    del lock["packages"]["node_modules/a"]
    (ws.root / "web/package-lock.json").write_text(json.dumps(lock))
    # The lock changed: the build asks for `pyimg lock`, which names the missing entry.
    r = ws.run("build", "//web:modules")
    assert r.code == 2 and "web/package-lock.json" in r.err and "pyimg lock" in r.err, r.err
    code, err = _lock(ws)
    assert code == 2 and "depends on 'a'" in err and "no entry" in err, err


def test_unpinned_entry_and_workspace_link_refused(registry: Registry, tmp_path: Path) -> None:
    ws = _workspace(tmp_path, registry)
    path = ws.root / "web/package-lock.json"
    lock = json.loads(path.read_text())
    del lock["packages"]["node_modules/@s/x"]["integrity"]
    path.write_text(json.dumps(lock))
    code, err = _lock(ws)
    assert code == 2 and "node_modules/@s/x" in err and "no 'integrity'" in err, err
    lock = json.loads(path.read_text())
    lock["packages"]["node_modules/@s/x"] = {"resolved": "packages/x", "link": True}
    path.write_text(json.dumps(lock))
    code, err = _lock(ws)
    assert code == 2 and "'node_modules/@s/x' is a link to the local directory 'packages/x'" in err
    assert "depend on a published version of it instead" in err, err
    v1 = {"name": "web", "lockfileVersion": 1, "dependencies": {}}
    path.write_text(json.dumps(v1))
    code, err = _lock(ws)
    assert code == 2 and "lockfileVersion 1" in err, err


def test_npmrc_token_sent_only_when_downloading(tmp_path: Path) -> None:
    with serve(Registry(token="s3cret")) as reg:
        ws = _workspace(tmp_path, reg)
        assert _lock(ws)[0] == 0
        r = ws.run("build", "//web:modules")
        assert r.code == 1 and "401" in r.err, r.err
        host = reg.url.removeprefix("http:")
        ws.write("web/.npmrc", f"{host}/:_authToken=${{NPM_TEST_TOKEN}}\n")
        os.environ["NPM_TEST_TOKEN"] = "s3cret"
        try:
            r = ws.run("build", "//web:modules")
        finally:
            del os.environ["NPM_TEST_TOKEN"]
        assert r.code == 0, r.err
        assert "s3cret" not in (ws.root / "pyimg.lock").read_text()


def test_bin_name_conflict_and_path_outside_root(registry: Registry, tmp_path: Path) -> None:
    ws = _workspace(tmp_path, registry)
    path = ws.root / "web/package-lock.json"
    lock = json.loads(path.read_text())
    lock["packages"]["node_modules/c"]["bin"] = {"a-cli": "index.js"}
    lock["packages"]["node_modules/c"]["hasInstallScript"] = True
    path.write_text(json.dumps(lock))
    code, err = _lock(ws)
    assert code == 0 and "MODULE.pyimg:2:1: warning: npm_lock 'npm': 1 package with install scripts" in err
    assert "(docs/node.md): c\n" in err
    r = ws.run("build", "//web:modules")
    assert r.code == 2 and ".bin/a-cli" in r.err and "'node_modules/a'" in r.err, r.err
    assert "'node_modules/c'" in r.err
    ws.write("web/BUILD.pyimg", 'load("@pyimg//rules:defs.bzl", "npm_layer")\n'
                                'npm_layer(name = "modules", lock = "@npm//:lock", '
                                'path = "/app/../../etc")\n')
    r = ws.run("build", "//web:modules")
    assert r.code != 0 and "leaves the image root" in r.err, r.err


def _registry_reachable() -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen("https://registry.npmjs.org/is-number/-/is-number-7.0.0.tgz",
                                    timeout=10) as resp:
            return resp.status == 200
    except OSError:
        return False


def test_real_registry_one_dependency(tmp_path: Path) -> None:
    """The one test that reaches registry.npmjs.org (skipped where it is unreachable)."""
    if not _registry_reachable():
        pytest.skip("registry.npmjs.org is unreachable")
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    ws.write("MODULE.pyimg", 'npm_lock(name = "npm", lock = "web/package-lock.json")\n')
    ws.write("web/package.json", '{"name": "web", "version": "1.0.0", '
                                 '"dependencies": {"is-number": "^7.0.0"}}\n')
    ws.write("web/package-lock.json", json.dumps({
        "name": "web", "version": "1.0.0", "lockfileVersion": 3, "requires": True,
        "packages": {
            "": {"name": "web", "version": "1.0.0", "dependencies": {"is-number": "^7.0.0"}},
            "node_modules/is-number": {
                "version": "7.0.0",
                "resolved": "https://registry.npmjs.org/is-number/-/is-number-7.0.0.tgz",
                "integrity": "sha512-41Cifkg6e8TylSpdtTpeLVMqvSBEVzTttHvERD741+pnZ8ANv0004MRL43QKPDlK9cGvNp6NZWZUBlbGXYxxng==",
                "engines": {"node": ">=0.12.0"},
            },
        },
    }))
    ws.write("web/BUILD.pyimg", _BUILD)
    assert _lock(ws)[0] == 0
    r = ws.run("build", "//web:modules")
    assert r.code == 0, r.err
    files = _listing(ws.out("web/modules.tar"))
    assert files["app/node_modules/is-number/package.json"][1] == 0o644
    assert "app/node_modules/is-number/index.js" in files


def test_per_package_targets_two_services_one_lock(registry: Registry, tmp_path: Path) -> None:
    """`@npm//c` and `@npm//@s/x`: each service's layer holds only its packages' transitive set,
    at their places in the lock's tree; a listed dev dependency is installed; an optional
    package for another os gives nothing."""
    ws = _workspace(tmp_path, registry)
    ws.write("web/BUILD.pyimg", """
        load("@pyimg//rules:defs.bzl", "npm_layer")

        npm_layer(name = "api", deps = ["@npm//c"], path = "/srv/api/node_modules",
                  platform = "linux/amd64")
        npm_layer(name = "worker", deps = ["@npm//@s/x", "@npm//a", "@npm//d",
                                           "@npm//opt-darwin"],
                  platform = "linux/amd64")
        npm_layer(name = "both", lock = "@npm//:lock", deps = ["@npm//a"])
        """)
    assert _lock(ws)[0] == 0
    r = ws.run("build", "//web:api", "//web:worker")
    assert r.code == 0, r.err
    api = _listing(ws.out("web/api.tar"))
    nm = "srv/api/node_modules"
    assert sorted(p for p in api if api[p][0] != "dir") == [
        f"{nm}/c/index.js", f"{nm}/c/node_modules/.bin/a-cli",
        f"{nm}/c/node_modules/a/bin/cli.js", f"{nm}/c/node_modules/a/index.js",
        f"{nm}/c/node_modules/a/package.json", f"{nm}/c/package.json"]
    worker = _listing(ws.out("web/worker.tar"))
    nm = "app/node_modules"
    packages = {p.split("/")[2] + ("/" + p.split("/")[3] if p.split("/")[2] == "@s" else "")
                for p in worker if worker[p][0] != "dir"}
    assert packages == {"@s/x", "a", "d", ".bin"}, sorted(worker)
    assert worker[f"{nm}/.bin/d"] == ("symlink", 0, "../d/index.js")
    assert worker[f"{nm}/a/index.js"][2] == hashlib.sha256(b"module.exports = 'a1';\n").hexdigest()
    # The api's action reads only the tarballs of its set.
    q = ws.run("aquery", "//web:api")
    assert q.code == 0, q.err
    assert q.out.count(".tgz") == 2, q.out
    r = ws.run("build", "//web:both")
    assert r.code == 2 and "give one of 'lock'" in r.err, r.err
