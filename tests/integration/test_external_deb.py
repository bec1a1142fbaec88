"""deb_index through the CLI against a signed apt archive on loopback: lock, fetch, --offline,
the lock's format, --update, and every refusal (bad signature, tampered index or .deb, unknown
package, a package missing for one architecture, an impossible request, an old Release)."""

from __future__ import annotations

import json
import shutil
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from workspace_helpers import Workspace

sys.path.insert(0, str(Path(__file__).parents[1]))
from debian_fixtures import Archive, ArchiveServer, Deb, SigningKey, require_tools, serve  # noqa: E402

pytestmark = pytest.mark.slow


def _per_arch(deb: Deb, arches: tuple[str, ...] = ("amd64", "arm64")) -> list[Deb]:
    return [Deb(**{**deb.__dict__, "architecture": a}) for a in arches]


def _packages() -> list[Deb]:
    return [
        *_per_arch(Deb("app", "1.0", depends="libfoo (>= 2) | libfoo-compat, mail-agent, "
                       "base-files", pre_depends="libc6 (>= 2.36)")),
        *_per_arch(Deb("libfoo", "1.0")),
        *_per_arch(Deb("libfoo", "2.0")),
        *_per_arch(Deb("libc6", "1:2.36-9", multi_arch="same")),
        Deb("postfix", "3.7", "all", provides="mail-agent"),
        Deb("exim4", "1.0", "all", provides="mail-agent", extra="Conflicts: mail-agent"),
        Deb("base-files", "12.4", "all", depends="app"),  # a cycle: app -> base-files -> app
        Deb("only-amd", "1.0", "amd64"),
    ]


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[tuple[Archive, ArchiveServer]]:
    require_tools()
    arc = Archive(tmp_path / "www" / "debian", SigningKey(tmp_path / "gnupg"),
                  packages=_packages())
    arc.publish()
    with serve(tmp_path / "www") as server:
        yield arc, server


def _workspace(tmp_path: Path, server: ArchiveServer, arc: Archive, name: str = "ws",
               packages: tuple[str, ...] = ("app",), armor: bool = True, key: bytes | None = None,
               extra: str = "", arches: tuple[str, ...] = ("amd64", "arm64")) -> Workspace:
    ws = Workspace(tmp_path / name, tmp_path / f"{name}-cache")
    (ws.root / "keys").mkdir(exist_ok=True)
    (ws.root / "keys" / "archive.gpg").write_bytes(key or arc.key.keyring(armor=armor))
    ws.write("MODULE.pyimg", f"""
        deb_index(
            name = "debian",
            sources = ["{server.url}/debian bookworm main"],
            keyring = "keys/archive.gpg",
            architectures = {json.dumps(list(arches))},
            packages = {json.dumps(list(packages))},{extra}
        )
        """)
    ws.write("app/BUILD.pyimg", """
        pkg_tar(name = "amd64", srcs = ["@debian//amd64:packages"], package_dir = "/debs")
        pkg_tar(name = "one", srcs = ["@debian//arm64:libfoo"], package_dir = "/debs")
        """)
    return ws


def _lock(ws: Workspace, *args: str):  # noqa: ANN202
    return ws.run("lock", "--disk-cache", str(ws.cache), *args)


def _tar_names(path: Path) -> list[str]:
    with tarfile.open(path) as t:
        return sorted(n for n in t.getnames() if n.endswith(".deb"))


def test_lock_fetch_and_offline_build(archive, tmp_path: Path) -> None:  # noqa: ANN001
    arc, server = archive
    ws = _workspace(tmp_path, server, arc)
    r = _lock(ws)
    assert r.code == 0, r.err
    text = (ws.root / "pyimg.lock").read_text()
    entry = json.loads(text)["repositories"]["debian"]
    amd = entry["debs"]["amd64"]
    # Alternatives, versions, virtual packages, Architecture: all and a cycle all resolved.
    assert {n: d["version"] for n, d in amd.items()} == {
        "app": "1.0", "base-files": "12.4", "libc6": "1:2.36-9", "libfoo": "2.0",
        "postfix": "3.7"}
    assert amd["postfix"]["arch"] == "all" and amd["app"]["arch"] == "amd64"
    assert amd["libfoo"]["url"] == f"{server.url}/debian/pool/main/libfoo_2.0_amd64.deb"
    assert amd["libfoo"]["sha256"] == __import__("hashlib").sha256(
        arc.pool_file(Deb("libfoo", "2.0")).read_bytes()).hexdigest()
    # One package per line, sorted: two branches adding packages merge.
    lines = [line.strip() for line in text.splitlines()]
    amd_rows = [line for line in lines if line.startswith('"') and '"sha256"' in line]
    assert len(amd_rows) == 10
    assert amd_rows[:5] == sorted(amd_rows[:5])
    # Stable: a second lock, and an --update against the unchanged archive, write the same bytes.
    assert _lock(ws).code == 0 and (ws.root / "pyimg.lock").read_text() == text
    assert _lock(ws, "--update", "debian").code == 0
    assert (ws.root / "pyimg.lock").read_text() == text

    r = ws.run("fetch", "--disk-cache", str(ws.cache))
    assert r.code == 0, r.err
    debs_fetched = [p for p in server.requests if p.endswith(".deb")]
    assert len(debs_fetched) == 8  # 5 per architecture, postfix and base-files shared
    # Each .deb decoded once, by fetch, into the repository cache (oci/deb.py): keyed by its sha256.
    pinned = {d["sha256"] for arch in entry["debs"].values() for d in arch.values()}
    assert {p.stem for p in (ws.cache / "debs").glob("*.json")} == pinned
    # Offline, the archive gone: the build reads only the repository cache.
    server.close()
    r = ws.run("build", "--offline", "//app:amd64", "//app:one")
    assert r.code == 0, r.err
    assert _tar_names(ws.out("app/amd64.tar")) == [
        "debs/app_1.0_amd64.deb", "debs/base-files_12.4_all.deb",
        "debs/libc6_1%3a2.36-9_amd64.deb", "debs/libfoo_2.0_amd64.deb",
        "debs/postfix_3.7_all.deb"]
    assert _tar_names(ws.out("app/one.tar")) == ["debs/libfoo_2.0_arm64.deb"]

    # A cold cache with --offline names what is missing.
    cold = _workspace(tmp_path, server, arc, name="cold")
    shutil.copy(ws.root / "pyimg.lock", cold.root / "pyimg.lock")
    r = cold.run("build", "--offline", "//app:amd64")
    assert r.code == 1
    assert "MODULE.pyimg:2" in r.err and "--offline" in r.err and ".deb" in r.err, r.err


def test_unpinned_deb_index_asks_for_lock(archive, tmp_path: Path) -> None:  # noqa: ANN001
    arc, server = archive
    ws = _workspace(tmp_path, server, arc)
    r = ws.run("build", "//app:amd64")
    assert r.code == 2
    assert "MODULE.pyimg:2" in r.err and "deb_index 'debian'" in r.err and "pyimg lock" in r.err


def test_lock_update_moves_to_the_archive_s_current_versions(archive, tmp_path: Path) -> None:  # noqa: ANN001
    arc, server = archive
    ws = _workspace(tmp_path, server, arc, armor=False)  # a binary keyring works too
    assert _lock(ws).code == 0
    arc.packages += _per_arch(Deb("libfoo", "2.1~rc1"))
    arc.publish()
    assert _lock(ws).code == 0  # the lock covers the declaration: nothing moves
    entry = json.loads((ws.root / "pyimg.lock").read_text())["repositories"]["debian"]
    assert entry["debs"]["arm64"]["libfoo"]["version"] == "2.0"
    r = _lock(ws, "--update", "debian")
    assert r.code == 0, r.err
    assert "changed: @debian" in r.err
    entry = json.loads((ws.root / "pyimg.lock").read_text())["repositories"]["debian"]
    assert entry["debs"]["arm64"]["libfoo"]["version"] == "2.1~rc1"


def test_a_keyring_that_does_not_verify_is_refused(archive, tmp_path: Path) -> None:  # noqa: ANN001
    arc, server = archive
    other = SigningKey(tmp_path / "other-gnupg")
    ws = _workspace(tmp_path, server, arc, key=other.keyring(armor=True))
    r = _lock(ws)
    assert r.code == 1
    assert "MODULE.pyimg:2" in r.err and "dists/bookworm/InRelease" in r.err
    assert "signature does not verify" in r.err, r.err
    assert not (ws.root / "pyimg.lock").exists()


def test_a_tampered_packages_index_is_refused(archive, tmp_path: Path) -> None:  # noqa: ANN001
    arc, server = archive
    index = arc.root / "dists/bookworm/main/binary-arm64/Packages.xz"
    import lzma

    text = lzma.decompress(index.read_bytes()).replace(b"Version: 2.0", b"Version: 9.0")
    index.write_bytes(lzma.compress(text))
    ws = _workspace(tmp_path, server, arc)
    r = _lock(ws)
    assert r.code == 1
    assert "main/binary-arm64/Packages.xz" in r.err and "tampered" in r.err, r.err


def test_a_tampered_deb_is_refused(archive, tmp_path: Path) -> None:  # noqa: ANN001
    arc, server = archive
    ws = _workspace(tmp_path, server, arc)
    assert _lock(ws).code == 0
    pool = arc.pool_file(Deb("libfoo", "2.0", "arm64"))
    pool.write_bytes(pool.read_bytes() + b"\0")
    r = ws.run("fetch", "--disk-cache", str(ws.cache))
    assert r.code == 1
    assert "MODULE.pyimg:2" in r.err and "libfoo 2.0 (arm64)" in r.err and "refused" in r.err
    assert "pyimg.lock pins" in r.err, r.err


@pytest.mark.parametrize(
    ("packages", "fragments"),
    [
        (("app", "libfooo"), ["package 'libfooo' is not in the archive", "did you mean 'libfoo'"]),
        (("only-amd",), ["'only-amd' is not in the archive for architecture arm64",
                         "(it is for amd64)"]),
        (("app", "libfoo=1.0"), ["app 1.0 -> libfoo (>= 2)", "libfoo 1.0 is already chosen",
                                 "libfoo-compat: no package or provider"]),
        (("app", "exim4"), ["exim4 1.0 and postfix 3.7 cannot be installed together",
                            "(exim4 Conflicts: mail-agent); postfix comes from: app 1.0"]),
    ],
)
def test_unsatisfiable_requests(archive, tmp_path: Path, packages, fragments) -> None:  # noqa: ANN001
    arc, server = archive
    ws = _workspace(tmp_path, server, arc, packages=packages)
    r = _lock(ws)
    assert r.code == 2, r.err  # a user error
    assert "MODULE.pyimg:2" in r.err and "deb_index 'debian'" in r.err
    for fragment in fragments:
        assert fragment in r.err, r.err
    assert "Traceback" not in r.err


def test_an_old_release_warns(archive, tmp_path: Path) -> None:  # noqa: ANN001
    arc, server = archive
    arc.date = time.time() - 40 * 86400
    arc.publish()
    ws = _workspace(tmp_path, server, arc, extra="\n            max_release_age_days = 30,")
    r = _lock(ws)
    assert r.code == 0, r.err
    assert "warning" in r.err and "40 days old (max_release_age_days = 30)" in r.err
    fresh = _workspace(tmp_path, server, arc, name="fresh")  # the default allows 90 days
    r = _lock(fresh)
    assert r.code == 0 and "days old" not in r.err


def test_release_and_release_gpg_when_there_is_no_inrelease(archive, tmp_path: Path) -> None:  # noqa: ANN001
    arc, server = archive
    arc.inrelease = False
    arc.publish()
    ws = _workspace(tmp_path, server, arc)
    r = _lock(ws)
    assert r.code == 0, r.err
    assert {"/debian/dists/bookworm/InRelease", "/debian/dists/bookworm/Release",
            "/debian/dists/bookworm/Release.gpg"} <= set(server.requests)
    entry = json.loads((ws.root / "pyimg.lock").read_text())["repositories"]["debian"]
    assert entry["debs"]["amd64"]["libfoo"]["version"] == "2.0"
    # The detached signature covers Release: an edited Release is refused, naming the file.
    release = arc.root / "dists/bookworm/Release"
    release.write_bytes(release.read_bytes().replace(b"Origin: pyimg-tests", b"Origin: evil"))
    r = _lock(ws, "--update", "debian")
    assert r.code == 1
    assert "MODULE.pyimg:2" in r.err and "dists/bookworm/Release.gpg" in r.err
    assert "signature does not verify" in r.err, r.err
    # Neither form: the error names the InRelease that was asked for first.
    (arc.root / "dists/bookworm/Release.gpg").unlink()
    r = _lock(ws, "--update", "debian")
    assert r.code == 1 and "dists/bookworm/InRelease" in r.err and "404" in r.err, r.err


@pytest.mark.parametrize(("binary_all", "all_fetches"), [("also", 0), ("only", 1)])
def test_binary_all_is_read_once_and_skipped_where_release_says_so(
    archive, tmp_path: Path, binary_all: str, all_fetches: int  # noqa: ANN001
) -> None:
    """Debian lists Architecture: all packages in each binary-ARCH index and says so in Release
    (No-Support-for-Architecture-all: Packages): binary-all is then not fetched, as apt does.
    An archive whose arch-all packages are only in binary-all has it read once for all arches."""
    arc, server = archive
    default = _workspace(tmp_path, server, arc, name="default")
    assert _lock(default).code == 0
    arc.binary_all = binary_all
    arc.publish()
    server.requests.clear()
    ws = _workspace(tmp_path, server, arc)
    r = _lock(ws)
    assert r.code == 0, r.err
    fetched = [p for p in server.requests if "/binary-all/" in p]
    assert len(fetched) == all_fetches, server.requests
    entry = json.loads((ws.root / "pyimg.lock").read_text())["repositories"]["debian"]
    assert entry == json.loads((default.root / "pyimg.lock").read_text())["repositories"]["debian"]


def test_a_release_past_its_valid_until_is_refused(archive, tmp_path: Path) -> None:  # noqa: ANN001
    arc, server = archive
    arc.valid_until = time.time() - 3600
    arc.publish()
    ws = _workspace(tmp_path, server, arc)
    r = _lock(ws)
    assert r.code == 1
    assert "MODULE.pyimg:2" in r.err and "dists/bookworm/InRelease expired on" in r.err
    assert "(its Valid-Until)" in r.err and "Traceback" not in r.err, r.err
    assert not (ws.root / "pyimg.lock").exists()
    arc.valid_until = time.time() + 7 * 86400
    arc.publish()
    assert _lock(ws).code == 0


def test_an_architecture_the_archive_lacks_is_named(archive, tmp_path: Path) -> None:  # noqa: ANN001
    arc, server = archive
    ws = _workspace(tmp_path, server, arc, arches=("amd64", "riscv64"))
    r = _lock(ws)
    assert r.code == 2
    assert "MODULE.pyimg:2" in r.err and "no Packages index for architecture riscv64" in r.err
    assert "bookworm main" in r.err, r.err
