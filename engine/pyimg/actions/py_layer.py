"""The `py_layer` builtin: Python wheels installed, as pip would, into one canonical layer tar."""

from __future__ import annotations

import posixpath
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyimg.actions._common import input_path, layer_mtime, params_dict, write_tar_output
from pyimg.actions.builtins import builtin
from pyimg.core.builtin import BuiltinCall
from pyimg.core.streams import ByteWriter
from pyimg.errors import UserInputError
from pyimg.oci.tar import TarEntry, normalize_path, write_tar

__all__ = ["PY_LAYER_PARAMS", "installed_paths", "py_layer", "write_py_layer_tar"]

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


_SPILL = 1 << 20  # a file larger than this goes to the scratch directory, not into memory


@dataclass(frozen=True)
class _Installed:
    """One file a wheel's installation writes: its bytes (or a scratch file) and exec bit."""

    data: bytes | None
    src: Path | None
    size: int
    executable: bool

    def content(self) -> bytes:
        return self.data if self.data is not None else Path(str(self.src)).read_bytes()


def _install_wheel(wheel: Path, params: dict[str, Any], scratch: Path,
                   what: str) -> tuple[str, dict[str, _Installed]]:
    """Install one wheel as pip would, into memory: (distribution name, in-image path -> file).
    Installer's own destination does the work (schemes, RECORD, scripts, shebangs, the check
    that nothing leaves a scheme directory); only the writing of bytes is ours."""
    import io

    from installer import install
    from installer.destinations import SchemeDictionaryDestination
    from installer.exceptions import InstallerError
    from installer.records import Hash, RecordEntry
    from installer.scripts import Script
    from installer.sources import WheelFile
    from installer.utils import copyfileobj_with_hashing

    python = params.get("python") or "/usr/local/bin/python3"
    if not isinstance(python, str) or not python.startswith("/") or any(c in python for c in " \n"):
        raise UserInputError(f"{what}: python must be the image's interpreter, an absolute path "
                             f"without spaces, got {python!r}")
    written: dict[str, _Installed] = {}

    class MemoryDestination(SchemeDictionaryDestination):
        def write_to_fs(self, scheme: Any, path: str, stream: Any,
                        is_executable: bool) -> RecordEntry:
            target = str(self._path_with_destdir(scheme, path))  # refuses a path leaving it
            if target in written:
                raise FileExistsError(f"{target} is written twice")
            buffer = io.BytesIO()
            digest, size = copyfileobj_with_hashing(stream, buffer, self.hash_algorithm)
            data: bytes | None = buffer.getvalue()
            src = None
            if size > _SPILL:
                src = scratch / f"f{len(written)}"
                src.write_bytes(data or b"")
                data = None
            written[target] = _Installed(data, src, size, is_executable)
            return RecordEntry(path, Hash(self.hash_algorithm, digest), size)

        def write_script(self, name: str, module: str, attr: str, section: Any) -> RecordEntry:
            script_name, data = Script(name, module, attr, section).generate(
                self.interpreter, self.script_kind)
            with io.BytesIO(data) as stream:
                return self.write_to_fs("scripts", script_name, stream, True)

    try:
        with WheelFile.open(wheel) as source, warnings.catch_warnings():
            # A wheel shipping __pycache__ is skipped with a warning: not an error here.
            warnings.simplefilter("ignore", RuntimeWarning)
            destination = MemoryDestination(
                _scheme(params, source.distribution, what), interpreter=python,
                script_kind="posix")
            install(source, destination, {"INSTALLER": INSTALLER})
            return str(source.distribution), written
    except (InstallerError, ValueError, KeyError, OSError) as e:
        # installer refuses a file written outside its scheme directory with ValueError.
        raise UserInputError(f"{what}: {wheel.name}: cannot install: {e}") from None
    except Exception as e:  # zipfile.BadZipFile and the like: a broken wheel, not our bug
        if type(e).__module__ in ("zipfile", "email.errors", "csv"):
            raise UserInputError(f"{what}: {wheel.name} is not a valid wheel: {e}") from None
        raise


def _bytecode(files: dict[str, _Installed], site_packages: str, python_version: str,
              what: str) -> dict[str, _Installed]:
    """Checked-hash `.pyc` for every `.py` under site-packages, as py_compile writes them: the
    same bytes on every build (no source mtime inside), valid while the source is unchanged."""
    import importlib.util
    import marshal

    running = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if running != python_version:
        raise UserInputError(
            f"{what}: bytecode = True needs pyimg to run on Python {python_version} (the "
            f"image's), but it runs on {running}: .pyc files are specific to a Python version")
    tag = sys.implementation.cache_tag
    prefix = site_packages.rstrip("/") + "/"
    out: dict[str, _Installed] = {}
    for path in sorted(files):
        if not (path.startswith(prefix) and path.endswith(".py")):
            continue
        source = files[path].content()
        try:
            code = compile(source, path, "exec", dont_inherit=True)
        except (SyntaxError, ValueError):
            continue  # pip skips what does not compile (Python 2 leftovers, templates)
        # PEP 552: magic, flags (checked hash), the source's SipHash, the marshalled code.
        pyc = (importlib.util.MAGIC_NUMBER + (0b11).to_bytes(4, "little")
               + importlib.util.source_hash(source) + marshal.dumps(code))
        directory, _, name = path.rpartition("/")
        out[f"{directory}/__pycache__/{name[:-3]}.{tag}.pyc"] = _Installed(
            pyc, None, len(pyc), False)
    return out


def installed_paths(wheel: Path, params: dict[str, Any], what: str = "py_layer") -> list[str]:
    """The in-layer paths py_layer `params` install `wheel` at (installer's own placement, as
    in `_install_wheel`, with no bytes kept): what the SBOM links to the wheel's package."""
    from installer import install
    from installer.destinations import SchemeDictionaryDestination
    from installer.exceptions import InstallerError
    from installer.records import RecordEntry
    from installer.scripts import Script
    from installer.sources import WheelFile

    paths: list[str] = []

    class PathsDestination(SchemeDictionaryDestination):
        def write_to_fs(self, scheme: Any, path: str, stream: Any,
                        is_executable: bool) -> RecordEntry:
            paths.append(str(self._path_with_destdir(scheme, path)).lstrip("/"))
            return RecordEntry(path, None, None)

        def write_script(self, name: str, module: str, attr: str, section: Any) -> RecordEntry:
            script_name, _ = Script(name, module, attr, section).generate(
                self.interpreter, self.script_kind)
            return self.write_to_fs("scripts", script_name, None, True)

    try:
        with WheelFile.open(wheel) as source, warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            destination = PathsDestination(
                _scheme(params, source.distribution, what),
                interpreter=str(params.get("python") or "/usr/local/bin/python3"),
                script_kind="posix")
            install(source, destination, {"INSTALLER": INSTALLER})
    except (InstallerError, ValueError, KeyError, OSError) as e:
        raise UserInputError(f"{what}: {wheel.name}: cannot install: {e}") from None
    if params.get("bytecode"):
        # _bytecode's names (a .py that does not compile has none in the layer: no match there).
        site_packages = _image_path(params.get("site_packages"), "site_packages", what)
        prefix = site_packages.strip("/") + "/"
        tag = sys.implementation.cache_tag
        for path in list(paths):
            if path.startswith(prefix) and path.endswith(".py"):
                directory, _, name = path.rpartition("/")
                paths.append(f"{directory}/__pycache__/{name[:-3]}.{tag}.pyc")
    return sorted(paths)


def write_py_layer_tar(call: BuiltinCall, params: dict[str, Any], out: ByteWriter, scratch: Path,
                       what: str = "py_layer") -> None:
    """Write the canonical tar of the wheels that py_layer `params` name to `out` (the one
    definition of those bytes: `oci_layer` streams the same tar into its compressor)."""
    unknown = sorted(set(params) - PY_LAYER_PARAMS)
    if unknown:
        raise UserInputError(f"{what}: unknown params {unknown}")
    mtime = layer_mtime(params, what)
    version = params.get("python_version") or ""
    if not isinstance(version, str) or not _PYTHON_VERSION.match(version):
        raise UserInputError(f"{what}: python_version must be like \"3.11\", got {version!r}")
    site_packages = _image_path(params.get("site_packages"), "site_packages", what)
    _scheme(params, "x", what)  # every install path checked before any wheel is read
    wheels = params.get("wheels") or []
    if not isinstance(wheels, list):
        raise UserInputError(f"{what}: wheels must be a list of inputs")
    merged: dict[str, tuple[str, _Installed]] = {}
    names: dict[str, str] = {}
    for i, wheel in enumerate(wheels):
        call.check_cancelled()
        src = input_path(call, wheel, f"{what}: wheels[{i}]")
        wheel_scratch = scratch / f"w{i}"
        wheel_scratch.mkdir()
        dist, files = _install_wheel(src, params, wheel_scratch, what)
        owner = f"{dist} ({src.name})"
        if dist in names:
            raise UserInputError(f"{what}: {dist} is given twice ({names[dist]} and {src.name})")
        names[dist] = src.name
        if params.get("bytecode"):
            files.update(_bytecode(files, site_packages, version, what))
        for path, installed in files.items():
            old = merged.get(path)
            if old is None:
                merged[path] = (owner, installed)
            elif old[1].executable != installed.executable or (
                    old[1].content() != installed.content()):
                raise UserInputError(
                    f"{what}: {path} is installed by both {old[0]} and {owner} with different "
                    "content (pip would let the second overwrite the first)")
    entries = [
        TarEntry(normalize_path(path.lstrip("/"), f"{what}: {owner}"), "file",
                 mode=0o755 if f.executable else 0o644, data=f.data, src=f.src, size=f.size)
        for path, (owner, f) in merged.items()
    ]
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
