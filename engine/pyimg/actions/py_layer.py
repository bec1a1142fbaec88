"""The `py_layer` builtin: Python wheels installed, as pip would, into one canonical layer tar."""

from __future__ import annotations

import os
import posixpath
import re
import sys
import warnings
from pathlib import Path
from typing import Any

from pyimg.actions._common import input_path, params_dict, write_tar_output
from pyimg.actions.builtins import builtin
from pyimg.core.builtin import BuiltinCall
from pyimg.core.streams import ByteWriter
from pyimg.errors import UserInputError
from pyimg.oci.tar import TarEntry, normalize_path, write_tar

__all__ = ["PY_LAYER_PARAMS", "py_layer", "write_py_layer_tar"]

PY_LAYER_PARAMS = {"wheels", "prefix", "site_packages", "python", "python_version", "bytecode", "mtime"}
INSTALLER = b"pyimg\n"
_PYTHON_VERSION = re.compile(r"^3\.[0-9]{1,2}$")


def _image_path(value: Any, key: str, what: str) -> str:
    """An absolute, normalized path inside the image; one that would leave its root is refused."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise UserInputError(f"{what}: {key} must be an absolute path in the image, got {value!r}")
    if ".." in value.split("/") or "\x00" in value or "\n" in value:
        raise UserInputError(f"{what}: {key} {value!r} leaves the image root")
    return "/" + normalize_path(value.lstrip("/") or ".", f"{what}: {key}") if value != "/" else "/"


def _scheme(params: dict[str, Any], dist: str, what: str) -> dict[str, str]:
    prefix = _image_path(params.get("prefix") or "/usr/local", "prefix", what)
    version = params.get("python_version") or "3"
    return {
        "purelib": _image_path(params.get("site_packages"), "site_packages", what),
        "platlib": _image_path(params.get("site_packages"), "site_packages", what),
        "scripts": posixpath.join(prefix, "bin"),
        "data": prefix,
        "headers": posixpath.join(prefix, "include", f"python{version}", dist),
    }


def _install_wheel(wheel: Path, params: dict[str, Any], root: Path, what: str) -> str:
    """Install one wheel under `root` (the image's `/`); returns the distribution's name."""
    from installer import install
    from installer.destinations import SchemeDictionaryDestination
    from installer.exceptions import InstallerError
    from installer.sources import WheelFile

    python = params.get("python") or "/usr/local/bin/python3"
    if not isinstance(python, str) or not python.startswith("/") or any(c in python for c in " \n"):
        raise UserInputError(f"{what}: python must be the image's interpreter, an absolute path "
                             f"without spaces, got {python!r}")
    try:
        with WheelFile.open(wheel) as source, warnings.catch_warnings():
            # A wheel shipping __pycache__ is skipped with a warning: not an error here.
            warnings.simplefilter("ignore", RuntimeWarning)
            destination = SchemeDictionaryDestination(
                _scheme(params, source.distribution, what), interpreter=python,
                script_kind="posix", destdir=str(root))
            install(source, destination, {"INSTALLER": INSTALLER})
            return str(source.distribution)
    except (InstallerError, ValueError, KeyError, OSError) as e:
        # installer refuses a file written outside its scheme directory with ValueError, and a
        # file written twice (by one wheel) with FileExistsError.
        raise UserInputError(f"{what}: {wheel.name}: cannot install: {e}") from None
    except Exception as e:  # zipfile.BadZipFile and the like: a broken wheel, not our bug
        if type(e).__module__ in ("zipfile", "email.errors", "csv"):
            raise UserInputError(f"{what}: {wheel.name} is not a valid wheel: {e}") from None
        raise


def _compile(root: Path, site_packages: str, python_version: str, what: str) -> None:
    """Checked-hash `.pyc` for every `.py` under site-packages: the same bytes on every build
    (no source mtime inside), valid as long as the source is unchanged."""
    import py_compile

    running = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if running != python_version:
        raise UserInputError(
            f"{what}: bytecode = True needs pyimg to run on Python {python_version} (the "
            f"image's), but it runs on {running}: .pyc files are specific to a Python version")
    base = root / site_packages.lstrip("/")
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.endswith(".py"):
                continue
            src = Path(dirpath) / name
            in_image = "/" + str(src.relative_to(root))
            cfile = Path(dirpath) / "__pycache__" / (
                f"{name[:-3]}.{sys.implementation.cache_tag}.pyc")
            try:
                py_compile.compile(str(src), cfile=str(cfile), dfile=in_image, doraise=True,
                                   invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
            except py_compile.PyCompileError:
                continue  # pip skips files that do not compile (Python 2 leftovers, templates)


def _entries(root: Path, owner: str, what: str) -> dict[str, tuple[str, TarEntry]]:
    """What one installation wrote, as layer entries: files 0644, or 0755 when executable."""
    found: dict[str, tuple[str, TarEntry]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir != ".":
            found[rel_dir] = (owner, TarEntry(rel_dir, "dir", mode=0o755))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel = normalize_path(os.path.relpath(path, root), f"{what}: {owner}")
            st = path.lstat()
            if not path.is_file() or path.is_symlink():
                raise UserInputError(f"{what}: {owner} installed /{rel}, which is not a file")
            mode = 0o755 if st.st_mode & 0o100 else 0o644
            found[rel] = (owner, TarEntry(rel, "file", mode=mode, src=path, size=st.st_size))
    return found


def _same_bytes(a: TarEntry, b: TarEntry) -> bool:
    assert a.src is not None and b.src is not None
    return a.mode == b.mode and a.src.read_bytes() == b.src.read_bytes()


def write_py_layer_tar(call: BuiltinCall, params: dict[str, Any], out: ByteWriter, scratch: Path,
                       what: str = "py_layer") -> None:
    """Write the canonical tar of the wheels that py_layer `params` name to `out` (the one
    definition of those bytes: `oci_layer` streams the same tar into its compressor)."""
    unknown = sorted(set(params) - PY_LAYER_PARAMS)
    if unknown:
        raise UserInputError(f"{what}: unknown params {unknown}")
    mtime = params.get("mtime") or 0
    if not isinstance(mtime, int) or isinstance(mtime, bool) or mtime < 0:
        raise UserInputError(f"{what}: mtime must be a non-negative integer, got {mtime!r}")
    version = params.get("python_version") or ""
    if not isinstance(version, str) or not _PYTHON_VERSION.match(version):
        raise UserInputError(f"{what}: python_version must be like \"3.11\", got {version!r}")
    site_packages = _image_path(params.get("site_packages"), "site_packages", what)
    _scheme(params, "x", what)  # every install path checked before any wheel is read
    wheels = params.get("wheels") or []
    if not isinstance(wheels, list):
        raise UserInputError(f"{what}: wheels must be a list of inputs")
    merged: dict[str, tuple[str, TarEntry]] = {}
    names: dict[str, str] = {}
    for i, wheel in enumerate(wheels):
        call.check_cancelled()
        src = input_path(call, wheel, f"{what}: wheels[{i}]")
        root = scratch / f"w{i}"
        root.mkdir()
        dist = _install_wheel(src, params, root, what)
        owner = f"{dist} ({src.name})"
        if dist in names:
            raise UserInputError(f"{what}: {dist} is given twice ({names[dist]} and {src.name})")
        names[dist] = src.name
        if params.get("bytecode"):
            _compile(root, site_packages, version, what)
        for path, (_, entry) in _entries(root, owner, what).items():
            old = merged.get(path)
            if old is None:
                merged[path] = (owner, entry)
            elif old[1].kind != entry.kind or (entry.kind == "file" and not _same_bytes(
                    old[1], entry)):
                raise UserInputError(
                    f"{what}: /{path} is installed by both {old[0]} and {owner} with different "
                    "content (pip would let the second overwrite the first)")
    entries = [entry for _, entry in merged.values()]
    write_tar(out, entries, mtime=mtime, uid=0, gid=0, check_cancelled=call.check_cancelled)


@builtin("py_layer")
def py_layer(call: BuiltinCall) -> None:
    """Write one uncompressed canonical layer tar of the wheels `params` name to the one output.

    params: {"wheels": [EXEC_PATH of a .whl], "prefix": "/usr/local",
             "site_packages": "/usr/local/lib/python3.11/site-packages",
             "python": "/usr/local/bin/python3", "python_version": "3.11", "bytecode": bool,
             "mtime": int}
    Each wheel is installed with pypa's `installer` as pip installs it: the package files under
    site_packages, `.data/{scripts,headers,data,purelib,platlib}` into their scheme directories,
    console-script wrappers `#!PYTHON` in PREFIX/bin, RECORD and INSTALLER (`pyimg`) in the
    .dist-info. Files are 0644 (0755 when executable), owned by root, mtime `mtime`. A path two
    distributions install differently is an error naming both; a path outside the image root is
    refused.
    """
    params = params_dict(call, PY_LAYER_PARAMS, "py_layer")
    write_tar_output(call, "py_layer",
                     lambda sink, scratch: write_py_layer_tar(call, params, sink, scratch))
