"""The deb_layer builtin: .deb data to canonical tar, merging, status records, users, refusals."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from debian_fixtures import make_deb, make_raw_deb
from oci_workspace import Workspace
from pyimg.errors import UserInputError

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")


def _deb_layer(ws: Workspace, debs: list[Path], jobs: int = 1, **params: object) -> Path:
    exec_paths = [str(d.relative_to(ws.root)) for d in debs]
    out = "pyimg-out/base.tar"
    ws.run("deb_layer", {"debs": exec_paths, **params}, exec_paths, [out], jobs=jobs)
    return ws.path(out)


def _listing(tar: Path) -> list[tuple[str, str, str, int, int, str, int]]:
    kinds = {tarfile.REGTYPE: "f", tarfile.DIRTYPE: "d", tarfile.SYMTYPE: "l", tarfile.LNKTYPE: "h"}
    with tarfile.open(tar) as tf:
        return [
            (m.name, kinds[m.type], oct(m.mode), m.uid, m.gid, m.linkname, m.mtime)
            for m in tf.getmembers()
        ]


def _read(tar: Path, name: str) -> bytes:
    with tarfile.open(tar) as tf:
        f = tf.extractfile(name)
        assert f is not None
        return f.read()


@pytest.fixture
def debs(ws: Workspace) -> Path:
    d = ws.root / "debs"
    d.mkdir()
    return d


@pytest.mark.parametrize("compression", ["xz", "gzip", "zstd", "none"])
def test_listing_is_exact(ws: Workspace, debs: Path, compression: str) -> None:
    tool = make_deb(
        debs,
        "tool",
        {"usr/bin/tool": (b"#!/bin/sh\n", 0o4755), "usr/share/doc/tool/copyright": b"GPL\n"},
        symlinks={"usr/bin/t": "tool", "bin": "usr/bin"},
        hardlinks={"usr/bin/tool2": "usr/bin/tool"},
        dirs={"var/cache/tool": 0o700},
        compression=compression,
        depends="libc6",
    )
    tar = _deb_layer(ws, [tool], mtime=7)
    S = "var/lib/dpkg/status.d"
    assert _listing(tar) == [
        ("bin", "l", "0o777", 0, 0, "usr/bin", 7),
        ("usr", "d", "0o755", 0, 0, "", 7),
        ("usr/bin", "d", "0o755", 0, 0, "", 7),
        ("usr/bin/t", "l", "0o777", 0, 0, "tool", 7),
        ("usr/bin/tool", "f", "0o4755", 0, 0, "", 7),  # setuid kept, as dpkg installs it
        ("usr/bin/tool2", "h", "0o4755", 0, 0, "usr/bin/tool", 7),
        ("usr/share", "d", "0o755", 0, 0, "", 7),
        ("usr/share/doc", "d", "0o755", 0, 0, "", 7),
        ("usr/share/doc/tool", "d", "0o755", 0, 0, "", 7),
        ("usr/share/doc/tool/copyright", "f", "0o644", 0, 0, "", 7),
        ("var", "d", "0o755", 0, 0, "", 7),
        ("var/cache", "d", "0o755", 0, 0, "", 7),
        ("var/cache/tool", "d", "0o700", 0, 0, "", 7),
        ("var/lib", "d", "0o755", 0, 0, "", 7),
        ("var/lib/dpkg", "d", "0o755", 0, 0, "", 7),
        (S, "d", "0o755", 0, 0, "", 7),
        (f"{S}/tool", "f", "0o644", 0, 0, "", 7),
        (f"{S}/tool.md5sums", "f", "0o644", 0, 0, "", 7),
    ]
    # The control file byte for byte, as distroless writes status.d (no Status line added).
    assert _read(tar, f"{S}/tool") == (
        b"Package: tool\nVersion: 1.0\nArchitecture: amd64\n"
        b"Maintainer: pyimg tests <tests@example.invalid>\nDepends: libc6\n"
        b"Description: test package tool\n"
    )
    md5 = hashlib.md5(b"#!/bin/sh\n").hexdigest()
    assert f"{md5}  usr/bin/tool\n".encode() in _read(tar, f"{S}/tool.md5sums")
    # What distroless' status.d holds: `dpkg-deb --info DEB control` (and md5sums), unchanged.
    for member, record in (("control", "tool"), ("md5sums", "tool.md5sums")):
        shipped = subprocess.run(["dpkg-deb", "--info", str(tool), member],
                                 check=True, capture_output=True).stdout
        assert _read(tar, f"{S}/{record}") == shipped
    assert _read(tar, "usr/bin/tool") == b"#!/bin/sh\n"


def test_same_bytes_whatever_the_order_and_compression(ws: Workspace, debs: Path) -> None:
    (debs / "xz").mkdir()
    (debs / "zst").mkdir()
    a1 = make_deb(debs / "xz", "a", {"usr/lib/a": b"a"}, compression="xz")
    b1 = make_deb(debs / "xz", "b", {"usr/lib/b": b"b"}, compression="gzip")
    a2 = make_deb(debs / "zst", "a", {"usr/lib/a": b"a"}, compression="zstd")
    b2 = make_deb(debs / "zst", "b", {"usr/lib/b": b"b"}, compression="none")
    one = _deb_layer(ws, [a1, b1]).read_bytes()
    two = _deb_layer(ws, [b2, a2]).read_bytes()
    assert one == two


def test_packages_read_on_several_threads_give_the_same_bytes_and_the_same_error(
    ws: Workspace, debs: Path
) -> None:
    pkgs = [make_deb(debs, f"p{i}", {f"usr/lib/p{i}": bytes(i * 1000)}, compression="xz")
            for i in range(6)]
    one = _deb_layer(ws, pkgs, jobs=1).read_bytes()
    assert _deb_layer(ws, pkgs, jobs=3).read_bytes() == one
    # Of two bad packages, the first given is named, whichever thread fails first.
    bad = [make_raw_deb(debs / f"bad{i}_1.0_amd64.deb", f"bad{i}", [_node(f"./dev/n{i}", tarfile.CHRTYPE)])
           for i in range(2)]
    for jobs in (1, 3):
        with pytest.raises(UserInputError, match=r"bad0_1.0_amd64.deb \(package bad0\)"):
            _deb_layer(ws, [*pkgs[:2], bad[0], *pkgs[2:], bad[1]], jobs=jobs)


def test_packages_read_from_the_repository_cache_give_the_same_bytes(
    ws: Workspace, debs: Path, tmp_path: Path
) -> None:
    # With the build's content store, each .deb is decoded once into the repository cache and
    # read from there after: the layer is byte for byte the one of a fresh decode, with a
    # ca-certificates bundle, merged-/usr links, hard links and several threads.
    from dataclasses import replace

    from pyimg.core.cas import ContentStore

    pkgs = [
        make_deb(debs, "ca-certificates", {"usr/share/ca-certificates/m/A.crt": b"-----A-----"},
                 dirs={"etc/ssl/certs": 0o755}),
        make_deb(debs, "base", {"usr/bin/sh": (b"#!sh" * 300, 0o755)}, symlinks={"bin": "usr/bin"},
                 hardlinks={"usr/bin/dash": "usr/bin/sh"}),
        make_deb(debs, "tool", {"bin/tool": (b"tool" * 9000, 0o755)}, compression="zstd"),
    ]
    fresh = _deb_layer(ws, pkgs, mtime=7).read_bytes()
    exec_paths = [str(d.relative_to(ws.root)) for d in pkgs]
    store = ContentStore(tmp_path / "cache")
    for jobs in (1, 3, 1):
        call = ws.call({"debs": exec_paths, "mtime": 7}, exec_paths, ["pyimg-out/cached.tar"],
                       jobs=jobs)
        ws.builtins["deb_layer"](replace(call, content_store=store))
        assert ws.path("pyimg-out/cached.tar").read_bytes() == fresh
    assert len(list((tmp_path / "cache" / "debs").glob("*.json"))) == 3


def test_shared_directories_and_identical_files_merge(ws: Workspace, debs: Path) -> None:
    a = make_deb(debs, "liba", {"usr/share/doc/shared/README": b"same", "usr/lib/a.so": b"a"})
    b = make_deb(debs, "libb", {"usr/share/doc/shared/README": b"same", "usr/lib/b.so": b"b"})
    names = [m[0] for m in _listing(_deb_layer(ws, [a, b]))]
    assert names.count("usr/lib") == 1 and names.count("usr/share/doc/shared/README") == 1


def test_conflicting_file_names_both_packages(ws: Workspace, debs: Path) -> None:
    a = make_deb(debs, "one", {"usr/bin/x": b"one"})
    b = make_deb(debs, "two", {"usr/bin/x": b"two"})
    with pytest.raises(UserInputError, match=r"/usr/bin/x is in packages 'one' .* and 'two'"):
        _deb_layer(ws, [a, b])


def test_conflicting_modes_refused(ws: Workspace, debs: Path) -> None:
    a = make_deb(debs, "one", {"usr/bin/x": (b"x", 0o755)})
    b = make_deb(debs, "two", {"usr/bin/x": (b"x", 0o644)})
    with pytest.raises(UserInputError, match="'one'.*'two'"):
        _deb_layer(ws, [a, b])


def test_the_same_package_twice_refused(ws: Workspace, debs: Path) -> None:
    a = make_deb(debs, "one", {"x": b"x"})
    (debs / "again").mkdir()
    b = make_deb(debs / "again", "one", {"x": b"x"}, version="2.0")
    with pytest.raises(UserInputError, match="package 'one' is given twice"):
        _deb_layer(ws, [a, b])


def _node(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (_node("./../../etc/evil", tarfile.REGTYPE), "contains '..'"),
        (_node("./usr/x", tarfile.LNKTYPE, "../../etc/shadow"), "contains '..'"),
        (_node("./dev/null", tarfile.CHRTYPE), "'dev/null' is a device, fifo"),
        (_node("./run/fifo", tarfile.FIFOTYPE), "'run/fifo' is a device, fifo"),
    ],
)
def test_hostile_entries_refused_naming_package_and_path(
    ws: Workspace, debs: Path, member: tarfile.TarInfo, message: str
) -> None:
    deb = make_raw_deb(debs / "evil_1.0_amd64.deb", "evil", [member])
    with pytest.raises(UserInputError, match=rf"\(package evil\).*{message}") as e:
        _deb_layer(ws, [deb])
    assert "debs/evil_1.0_amd64.deb" in str(e.value)


def test_absolute_symlink_targets_are_fine(ws: Workspace, debs: Path) -> None:
    deb = make_raw_deb(
        debs / "links_1.0_amd64.deb", "links", [_node("./etc/mtab", tarfile.SYMTYPE, "/proc/mounts")]
    )
    assert ("etc/mtab", "l", "0o644", 0, 0, "/proc/mounts", 0) in _listing(_deb_layer(ws, [deb]))


def test_not_a_deb_refused(ws: Workspace, debs: Path) -> None:
    junk = debs / "junk.deb"
    junk.write_bytes(b"hello")
    with pytest.raises(UserInputError, match="junk.deb: not a Debian package"):
        _deb_layer(ws, [junk])


def test_users_and_groups(ws: Workspace, debs: Path) -> None:
    a = make_deb(debs, "a", {"usr/bin/a": b"a"})
    tar = _deb_layer(ws, [a], users={"app": "1000", "web": "1001:2000"}, groups={"www": "2000"})
    assert _read(tar, "etc/passwd") == (
        b"root:x:0:0:root:/root:/sbin/nologin\n"
        b"app:x:1000:1000:app:/home/app:/sbin/nologin\n"
        b"web:x:1001:2000:web:/home/web:/sbin/nologin\n"
    )
    assert _read(tar, "etc/group") == b"root:x:0:\napp:x:1000:\nwww:x:2000:\n"
    listing = _listing(tar)
    assert ("home/app", "d", "0o755", 1000, 1000, "", 0) in listing
    assert ("home/web", "d", "0o755", 1001, 2000, "", 0) in listing
    assert ("root", "d", "0o700", 0, 0, "", 0) in listing


def test_users_over_a_shipped_passwd_refused(ws: Workspace, debs: Path) -> None:
    a = make_deb(debs, "base-passwd-ish", {"etc/passwd": b"root:x:0:0::/:/bin/sh\n"})
    with pytest.raises(UserInputError, match="/etc/passwd is shipped by package 'base-passwd-ish'"):
        _deb_layer(ws, [a], users={"app": "1000"})


def test_duplicate_uid_refused(ws: Workspace, debs: Path) -> None:
    a = make_deb(debs, "a", {"x": b"x"})
    with pytest.raises(UserInputError, match="share a uid"):
        _deb_layer(ws, [a], users={"a": "1000", "b": "1000"})


def test_ca_certificates_bundle_is_built(ws: Workspace, debs: Path) -> None:
    ca = make_deb(
        debs,
        "ca-certificates",
        {
            "usr/share/ca-certificates/mozilla/B.crt": b"-----B-----",
            "usr/share/ca-certificates/mozilla/A.crt": b"-----A-----\n",
        },
        dirs={"etc/ssl/certs": 0o755},
    )
    tar = _deb_layer(ws, [ca])
    assert _read(tar, "etc/ssl/certs/ca-certificates.crt") == b"-----A-----\n-----B-----\n"


def test_oci_layer_streams_the_same_tar(ws: Workspace, debs: Path) -> None:
    a = make_deb(debs, "a", {"usr/bin/a": (b"a" * 5000, 0o755)})
    tar = _deb_layer(ws, [a], mtime=5)
    exec_path = str(a.relative_to(ws.root))
    blob, desc = "pyimg-out/l.blob", "pyimg-out/l.json"
    ws.run(
        "oci_layer",
        {
            "compression": "gzip",
            "tar_spec": {"debs": [exec_path], "mtime": 5, "users": {}, "groups": {}},
            "tar_writer": "deb_layer",
        },
        [exec_path],
        [blob, desc],
    )
    descriptor = json.loads(ws.path(desc).read_text())
    assert descriptor["diffId"] == "sha256:" + hashlib.sha256(tar.read_bytes()).hexdigest()


def test_merged_usr_links_are_followed(ws: Workspace, debs: Path) -> None:
    base = make_deb(
        debs, "base-files", {"usr/bin/.keep": b""}, symlinks={"bin": "usr/bin", "lib": "/usr/lib"}
    )
    old = make_deb(
        debs,
        "old-style",
        {"bin/tool": (b"t", 0o755), "lib/libx.so": b"x"},
        hardlinks={"bin/tool2": "bin/tool"},
    )
    listing = {m[0]: m for m in _listing(_deb_layer(ws, [old, base]))}
    assert listing["bin"][1:3] == ("l", "0o777") and listing["lib"][5] == "/usr/lib"
    assert listing["usr/bin/tool"][1] == "f" and listing["usr/lib/libx.so"][1] == "f"
    assert listing["usr/bin/tool2"][1:] == ("h", "0o755", 0, 0, "usr/bin/tool", 0)
    assert not any(p.startswith(("bin/", "lib/")) for p in listing)


def test_a_link_cycle_is_refused(ws: Workspace, debs: Path) -> None:
    a = make_deb(debs, "loop", {"a/x": b"x"}, symlinks={"b": "c", "c": "b"})
    b = make_deb(debs, "user", {"b/y": b"y"})
    with pytest.raises(UserInputError, match="too many levels of symbolic links"):
        _deb_layer(ws, [a, b])


@pytest.mark.parametrize("target", ["../../../outside", "/../../outside"])
def test_a_link_out_of_the_root_is_never_followed(ws: Workspace, debs: Path, target: str) -> None:
    # Merged /usr links are followed (as dpkg does); one leading out of the root never carries
    # another package's files out with it.
    one = make_raw_deb(debs / "one_1.0_amd64.deb", "one", [_node("./a", tarfile.SYMTYPE, target)])
    two = make_raw_deb(debs / "two_1.0_amd64.deb", "two", [_node("./a/evil", tarfile.REGTYPE)])
    with pytest.raises(UserInputError, match="'a' is a symlink in the layer but 'a/evil' is under it"):
        _deb_layer(ws, [one, two])
