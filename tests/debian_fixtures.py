"""Test helpers that make small Debian packages: with `dpkg-deb --build`, or by hand when hostile."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import Mapping
from pathlib import Path

DPKG_DEB = shutil.which("dpkg-deb")


def control_text(name: str, version: str = "1.0", arch: str = "amd64", extra: str = "") -> str:
    """A minimal valid control paragraph."""
    return (
        f"Package: {name}\nVersion: {version}\nArchitecture: {arch}\n"
        "Maintainer: Test <test@example.invalid>\n"
        f"{extra}Description: test package {name}\n"
    )


def make_deb(
    out_dir: Path,
    name: str,
    files: Mapping[str, bytes | tuple[bytes, int]] = {},
    *,
    symlinks: Mapping[str, str] = {},
    hardlinks: Mapping[str, str] = {},
    dirs: Mapping[str, int] = {},
    version: str = "1.0",
    arch: str = "amd64",
    compression: str = "xz",
    extra_control: str = "",
) -> Path:
    """Build `<name>_<version>_<arch>.deb` in `out_dir` with `dpkg-deb --build`, owned 0:0.

    files: path -> content or (content, mode); symlinks: path -> target; hardlinks: path -> the
    path (in `files`) it links to; dirs: path -> mode. compression: xz, gzip, zstd or none.
    """
    assert DPKG_DEB, "dpkg-deb is needed (package dpkg)"
    root = out_dir / f".{name}-{version}-{arch}-root"
    if root.exists():
        shutil.rmtree(root)
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN").chmod(0o755)
    (root / "DEBIAN" / "control").write_text(control_text(name, version, arch, extra_control))
    for path, mode in dirs.items():
        d = root / path
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(mode)
    for path, spec in files.items():
        data, mode = spec if isinstance(spec, tuple) else (spec, 0o644)
        f = root / path
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(data)
        f.chmod(mode)
    # As dh_md5sums writes it (dpkg-deb does not): scanners read it from status.d.
    md5sums = "".join(
        f"{hashlib.md5(data).hexdigest()}  {path}\n"
        for path, data in sorted((p, (s[0] if isinstance(s, tuple) else s)) for p, s in files.items())
    )
    (root / "DEBIAN" / "md5sums").write_text(md5sums)
    (root / "DEBIAN" / "md5sums").chmod(0o644)
    for path, target in hardlinks.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        os.link(root / target, root / path)
    for path, target in symlinks.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, root / path)
    out = out_dir / f"{name}_{version}_{arch}.deb"
    subprocess.run(
        [DPKG_DEB, "--root-owner-group", f"-Z{compression}", "--build", str(root), str(out)],
        check=True,
        capture_output=True,
    )
    shutil.rmtree(root)
    return out


def make_raw_deb(out: Path, name: str, data_members: list[tarfile.TarInfo]) -> Path:
    """A `.deb` written by hand (ar + uncompressed tars), for what dpkg-deb refuses to build:
    paths escaping the root, device nodes. Members carry no content."""

    def tar_of(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
            for info, data in members:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data) if data else None)
        return buf.getvalue()

    control = tarfile.TarInfo("./control")
    control_tar = tar_of([(control, control_text(name).encode())])
    data_tar = tar_of([(m, b"") for m in data_members])

    def member(member_name: str, data: bytes) -> bytes:
        header = (
            f"{member_name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}".encode() + b"`\n"
        )
        return header + data + (b"\n" if len(data) % 2 else b"")

    out.write_bytes(
        b"!<arch>\n"
        + member("debian-binary", b"2.0\n")
        + member("control.tar", control_tar)
        + member("data.tar", data_tar)
    )
    return out
