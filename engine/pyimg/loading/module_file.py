"""Evaluating `MODULE.pyimg`: the pinned external inputs (`oci_pull`, `http_file`, `http_archive`,
`deb_index`, `pip_lock`, `npm_lock`).

MODULE.pyimg declares external repositories and nothing else (docs/external-inputs.md). Each declaration
becomes a frozen value carrying its origin (`MODULE.pyimg:LINE:COL`), so that every later error about
it (unpinned, download failed, digest mismatch) points at the line the user wrote.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pyimg.core.workspace import MODULE_FILE
from pyimg.errors import UserInputError
from pyimg.loading.limits import decode_source

__all__ = [
    "DebIndex",
    "DebSource",
    "Declaration",
    "HttpArchive",
    "HttpFile",
    "ModuleFile",
    "NpmLock",
    "OciPull",
    "PipLock",
    "evaluate_module",
    "parse_module",
]

_PRELUDE = "@pyimg//:module_prelude.bzl"
_PRELUDE_DISPLAY = "@pyimg/module_prelude.bzl"
_REPO_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_PLATFORM = re.compile(r"^[a-z0-9_]+/[a-z0-9_]+(/[a-z0-9_.]+)?$")

# The declarations are Starlark functions so that call_stack() gives each its MODULE.pyimg line;
# they hand everything to one Python callable.
_PRELUDE_TEXT = """
def oci_pull(name, image, digest = None, tag = None, platforms = None):
    _pyimg_declare(kind = "oci_pull", name = name, stack = call_stack(), attrs = {
        "image": image, "digest": digest, "tag": tag, "platforms": platforms})

def http_file(name, urls = None, sha256 = None, executable = False, downloaded_file_path = None, url = None,
              integrity = None):
    _pyimg_declare(kind = "http_file", name = name, stack = call_stack(), attrs = {
        "urls": urls, "url": url, "sha256": sha256, "executable": executable,
        "downloaded_file_path": downloaded_file_path, "integrity": integrity})

def http_archive(name, urls = None, sha256 = None, strip_prefix = "", build_file_content = None, url = None,
                 max_unpacked_bytes = None, max_unpacked_files = None, integrity = None):
    _pyimg_declare(kind = "http_archive", name = name, stack = call_stack(), attrs = {
        "urls": urls, "url": url, "sha256": sha256, "integrity": integrity, "strip_prefix": strip_prefix,
        "build_file_content": build_file_content, "max_unpacked_bytes": max_unpacked_bytes,
        "max_unpacked_files": max_unpacked_files})

def deb_index(name, sources, keyring, architectures, packages, max_release_age_days = None):
    _pyimg_declare(kind = "deb_index", name = name, stack = call_stack(), attrs = {
        "sources": sources, "keyring": keyring, "architectures": architectures,
        "packages": packages, "max_release_age_days": max_release_age_days})

def pip_lock(name, requirements = None, lock = None, python_version = None, platforms = None,
             index_url = None, extra_index_urls = None, glibc = None, musl = None,
             pyproject = None):
    _pyimg_declare(kind = "pip_lock", name = name, stack = call_stack(), attrs = {
        "requirements": requirements, "lock": lock, "python_version": python_version,
        "platforms": platforms, "index_url": index_url, "extra_index_urls": extra_index_urls,
        "glibc": glibc, "musl": musl, "pyproject": pyproject})
def npm_lock(name, lock, package_json = None, registry = None, npmrc = None):
    _pyimg_declare(kind = "npm_lock", name = name, stack = call_stack(), attrs = {
        "lock": lock, "package_json": package_json, "registry": registry, "npmrc": npmrc})
"""


@dataclass(frozen=True)
class OciPull:
    """A registry image pinned by manifest or index digest (or by tag plus pyimg.lock)."""

    kind: ClassVar[str] = "oci_pull"
    name: str
    origin: str
    image: str
    digest: str | None = None
    tag: str | None = None
    platforms: tuple[str, ...] = ()

    @property
    def pinned(self) -> bool:
        return self.digest is not None


@dataclass(frozen=True)
class HttpFile:
    """One downloaded file, pinned by sha256."""

    kind: ClassVar[str] = "http_file"
    name: str
    origin: str
    urls: tuple[str, ...]
    sha256: str | None = None
    executable: bool = False
    downloaded_file_path: str = ""
    integrity: str | None = None  # "sha512-<base64>" or "sha384-…" (core/sri.py)

    @property
    def pinned(self) -> bool:
        return self.sha256 is not None or self.integrity is not None

    @property
    def file_name(self) -> str:
        if self.downloaded_file_path:
            return self.downloaded_file_path
        base = self.urls[0].split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        return base or "downloaded"


@dataclass(frozen=True)
class HttpArchive:
    """A tar or zip archive, pinned by sha256, unpacked safely, with a BUILD file of our own."""

    kind: ClassVar[str] = "http_archive"
    name: str
    origin: str
    urls: tuple[str, ...]
    sha256: str | None = None
    strip_prefix: str = ""
    build_file_content: str | None = None
    # Bounds on unpacking (None: external/archive.py's defaults); they never change what is unpacked.
    max_unpacked_bytes: int | None = None
    max_unpacked_files: int | None = None
    integrity: str | None = None  # "sha512-<base64>" or "sha384-…" (core/sri.py)

    @property
    def pinned(self) -> bool:
        return self.sha256 is not None or self.integrity is not None


@dataclass(frozen=True)
class DebSource:
    """One apt source line: `URL SUITE COMPONENT...`."""

    url: str
    suite: str
    components: tuple[str, ...]

    def __str__(self) -> str:
        return " ".join((self.url, self.suite, *self.components))


@dataclass(frozen=True)
class DebIndex:
    """Debian packages from signed apt archives, resolved per architecture by `pyimg lock`."""

    kind: ClassVar[str] = "deb_index"
    name: str
    origin: str
    sources: tuple[DebSource, ...]
    keyring: str  # a workspace-relative file
    architectures: tuple[str, ...]
    packages: tuple[str, ...]
    # Release files older than this warn at `pyimg lock` (a frozen or replayed archive).
    max_release_age_days: int = 90

    @property
    def pinned(self) -> bool:
        return False  # only pyimg.lock pins it


@dataclass(frozen=True)
class PipLock:
    """Python wheels pinned by a requirements.txt with hashes or a pylock.toml, chosen per
    platform by `pyimg lock` (external/python_lock.py)."""

    kind: ClassVar[str] = "pip_lock"
    name: str
    origin: str
    source: str  # the workspace-relative requirements.txt or pylock.toml
    source_sha256: str  # of its bytes when MODULE.pyimg was read: a changed file is a stale lock
    python_version: str  # "3.11"
    platforms: tuple[str, ...]
    index_url: str
    extra_index_urls: tuple[str, ...] = ()
    glibc: str = "2.28"  # the newest manylinux the target's libc accepts
    musl: str | None = None  # set: musllinux wheels instead of manylinux
    # The pyproject.toml whose [project].dependencies the lock must cover (python_lock.py), and
    # the sha256 of its bytes: a change checks the lock again.
    pyproject: str | None = None
    pyproject_sha256: str | None = None

    @property
    def pinned(self) -> bool:
        return False  # only pyimg.lock pins the wheels

    @property
    def workspace_files(self) -> tuple[str, ...]:
        """The workspace files the repository is made from (a build depends on them)."""
        return (self.source,) if self.pyproject is None else (self.source, self.pyproject)

    @property
    def is_pylock(self) -> bool:
        return self.source.rsplit("/", 1)[-1].startswith("pylock")


@dataclass(frozen=True)
class NpmLock:
    """A Node dependency set: a package-lock.json (v2/v3) in the workspace, each tarball pinned
    by the lock's own integrity; pyimg.lock records the digest of the lock it was checked at."""

    kind: ClassVar[str] = "npm_lock"
    name: str
    origin: str
    lock: str  # workspace-relative package-lock.json
    package_json: str  # workspace-relative package.json
    registry: str = "https://registry.npmjs.org"
    npmrc: str | None = None  # a workspace .npmrc for credentials, read only when downloading

    @property
    def pinned(self) -> bool:
        return False  # pyimg.lock records which package-lock.json was checked

    @property
    def workspace_files(self) -> tuple[str, ...]:
        """The workspace files the repository is made from (a build depends on them)."""
        return (self.lock, self.package_json)


Declaration = OciPull | HttpFile | HttpArchive | DebIndex | PipLock | NpmLock

DEFAULT_MAX_RELEASE_AGE_DAYS = 90
_DEB_ARCH = re.compile(r"^[a-z0-9][a-z0-9\-]*$")
_DEB_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.\-]*(=[A-Za-z0-9.+~:\-]+)?$")


@dataclass(frozen=True)
class ModuleFile:
    """The declarations of MODULE.pyimg, by name, in file order."""

    path: Path
    declarations: tuple[Declaration, ...]

    def get(self, name: str) -> Declaration | None:
        return next((d for d in self.declarations if d.name == name), None)

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.declarations]

    @property
    def workspace_files(self) -> list[str]:
        """Workspace files that declarations are made from at build time (an npm_lock's
        package-lock.json and package.json), for the caches to watch."""
        return [f for d in self.declarations if isinstance(d, (PipLock, NpmLock))
                for f in d.workspace_files]


def evaluate_module(workspace: Path) -> ModuleFile:
    """Evaluate `<workspace>/MODULE.pyimg` (a missing file declares nothing)."""
    path = workspace / MODULE_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = b""
    text = decode_source(data, MODULE_FILE)
    return parse_module(text, path)


def parse_module(text: str, path: Path) -> ModuleFile:
    # Here, not at the top: the declarations' types are used where no MODULE.pyimg is evaluated
    # (a push with nothing to build), and the Starlark interpreter costs start-up.
    import starlark as sl

    from pyimg.loading._eval import SourceFile, evaluate, parse_stack, prepare_source, render_error

    sources: dict[str, SourceFile] = {}
    found: list[Declaration] = []
    pending: list[UserInputError] = []

    def declare(kind: str, name: Any, attrs: dict[str, Any], stack: str) -> None:
        attrs = {**attrs, "_workspace": path.parent}
        frames = [f for f in parse_stack(stack, sources) if f.file == MODULE_FILE]
        origin = MODULE_FILE
        if frames:
            line = frames[0].line
            origin = f"{MODULE_FILE}:{line}:{sources[MODULE_FILE].call_column(line, kind)}"
        try:
            decl = _make(kind, name, attrs, origin)
            previous = next((d for d in found if d.name == decl.name), None)
            if previous is not None:
                raise UserInputError(
                    f"{kind}: a repository named '{decl.name}' is already declared at "
                    f"{previous.origin}",
                    origin=origin,
                )
        except UserInputError as e:
            pending.append(e)
            raise
        found.append(decl)

    prelude_src = prepare_source(_PRELUDE_DISPLAY, _PRELUDE_TEXT, [])
    sources[_PRELUDE_DISPLAY] = prelude_src
    prelude = sl.Module()
    prelude.add_callable("_pyimg_declare", declare)
    evaluate(_PRELUDE_DISPLAY, prelude_src.evaluated, prelude)
    frozen = prelude.freeze()

    def load(module: str) -> sl.FrozenModule:
        if module != _PRELUDE:
            at = src.load_position(module)
            # Kept aside, as declare() does: Starlark would wrap it in a message of its own that
            # repeats the location.
            pending.append(UserInputError(
                f"load() of '{module}': {MODULE_FILE} declares external inputs only and cannot "
                "load files",
                origin=f"{MODULE_FILE}:{at[0]}:{at[1]}" if at else MODULE_FILE,
            ))
            raise pending[-1]
        return frozen

    src = prepare_source(MODULE_FILE, text, [(_PRELUDE, ["oci_pull", "http_file", "http_archive", "deb_index", "pip_lock", "npm_lock"])])
    sources[MODULE_FILE] = src
    try:
        evaluate(MODULE_FILE, src.evaluated, sl.Module(), sl.FileLoader(load))
    except sl.StarlarkError as e:
        if pending:
            raise pending[0] from None
        raise render_error(e, sources) from None
    return ModuleFile(path, tuple(found))


def _make(kind: str, name: Any, attrs: dict[str, Any], origin: str) -> Declaration:
    def bad(message: str) -> UserInputError:
        return UserInputError(f"{kind} '{name}': {message}", origin=origin)

    if not isinstance(name, str) or not _REPO_NAME.match(name):
        raise UserInputError(
            f"{kind}: 'name' must be a repository name (a letter, then letters, digits, '_', "
            f"'-' or '.'), got {name!r}",
            origin=origin,
        )
    if name == "pyimg":
        raise bad("the repository name 'pyimg' is reserved for pyimg's own rules")

    def opt_str(key: str) -> str | None:
        value = attrs.get(key)
        if value is not None and not isinstance(value, str):
            raise bad(f"'{key}' must be a string, got {value!r}")
        return value or None

    if kind == "oci_pull":
        image = opt_str("image")
        if not image:
            raise bad("'image' must name a registry image, like \"gcr.io/distroless/static\"")
        if "@" in image or ":" in image.rsplit("/", 1)[-1]:
            raise bad(
                f"'image' must not hold a tag or digest (use 'tag' and 'digest'), got {image!r}"
            )
        digest = opt_str("digest")
        if digest is not None and not (digest.startswith("sha256:") and _SHA256.match(digest[7:])):
            raise bad(f"'digest' must be \"sha256:<64 hex digits>\", got {digest!r}")
        tag = opt_str("tag")
        if digest is None and tag is None:
            raise bad("give 'digest' (or a 'tag' and run `pyimg lock` to pin it)")
        platforms = attrs.get("platforms") or []
        if not isinstance(platforms, list) or not all(
            isinstance(p, str) and _PLATFORM.match(p) for p in platforms
        ):
            raise bad(
                f'\'platforms\' must be a list like ["linux/amd64", "linux/arm64/v8"], got {platforms!r}'
            )
        from pyimg.oci.platforms import platform_text_problem

        for p in platforms:
            problem = platform_text_problem(p)
            if problem is not None:
                raise bad(f"'platforms': {problem[1]}")
        return OciPull(name, origin, image, digest, tag, tuple(platforms))
    if kind == "deb_index":
        return _make_deb_index(name, attrs, origin, bad)
    if kind == "pip_lock":
        return _make_pip_lock(name, attrs, origin, bad)
    if kind == "npm_lock":
        return _make_npm_lock(name, attrs, origin, bad)

    urls = attrs.get("urls") or ([attrs["url"]] if attrs.get("url") else [])
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) and u for u in urls):
        raise bad(f"'urls' must be a non-empty list of URLs, got {attrs.get('urls')!r}")
    for u in urls:
        if not u.startswith(("http://", "https://", "file://")):
            raise bad(f"URL {u!r} must start with https://, http:// or file://")
    sha = opt_str("sha256")
    if sha is not None:
        sha = sha.lower().removeprefix("sha256:")
        if not _SHA256.match(sha):
            raise bad(f"'sha256' must be 64 hex digits, got {attrs.get('sha256')!r}")
    integrity = opt_str("integrity")
    if integrity is not None:
        from pyimg.core.sri import parse_sri

        if sha is not None:
            raise bad("give 'sha256' or 'integrity', not both")
        try:
            sri = parse_sri(integrity)
        except ValueError as e:
            raise bad(f"'integrity': {e}") from None
        # A sha256 pin is one whatever it is written as: the store keys blobs by sha256.
        sha, integrity = (sri.hex, None) if sri.algorithm == "sha256" else (None, str(sri))
    if kind == "http_file":
        path = opt_str("downloaded_file_path") or ""
        if path.startswith("/") or ".." in path.split("/") or path.endswith("/"):
            raise bad(f"'downloaded_file_path' must be a relative file path, got {path!r}")
        executable = attrs.get("executable", False)
        if not isinstance(executable, bool):
            raise bad(f"'executable' must be True or False, got {executable!r}")
        return HttpFile(name, origin, tuple(urls), sha, executable, path, integrity)
    strip = opt_str("strip_prefix") or ""
    build = attrs.get("build_file_content")
    if build is not None and not isinstance(build, str):
        raise bad("'build_file_content' must be a string")
    bounds = []
    for key in ("max_unpacked_bytes", "max_unpacked_files"):
        value = attrs.get(key)
        if value is not None and (type(value) is not int or value <= 0):
            raise bad(f"'{key}' must be a positive integer, got {value!r}")
        bounds.append(value)
    return HttpArchive(name, origin, tuple(urls), sha, strip.strip("/"), build, bounds[0], bounds[1],
                       integrity)


def _make_deb_index(
    name: str, attrs: dict[str, Any], origin: str, bad: Callable[[str], UserInputError]
) -> DebIndex:
    def str_list(key: str, example: str) -> list[str]:
        value = attrs.get(key)
        if not isinstance(value, list) or not value or not all(
            isinstance(v, str) and v.strip() for v in value
        ):
            raise bad(f"'{key}' must be a non-empty list of strings like {example}, got {value!r}")
        return [v.strip() for v in value]

    sources = []
    for line in str_list("sources", '["https://deb.debian.org/debian bookworm main"]'):
        parts = line.split()
        if len(parts) < 3 or not parts[0].startswith(("http://", "https://", "file://")):
            raise bad(
                f"source {line!r} must be 'URL SUITE COMPONENT...', the URL starting with "
                "https://, http:// or file://"
            )
        sources.append(DebSource(parts[0].rstrip("/"), parts[1], tuple(parts[2:])))
    keyring = attrs.get("keyring")
    if not isinstance(keyring, str) or not keyring or keyring.startswith("/") or (
        ".." in keyring.split("/")
    ):
        raise bad(f"'keyring' must be a file path inside the workspace, got {keyring!r}")
    arches = str_list("architectures", '["amd64", "arm64"]')
    for a in arches:
        if not _DEB_ARCH.match(a) or a == "all":
            raise bad(f"'architectures': {a!r} is not a Debian architecture like amd64 or arm64")
    packages = str_list("packages", '["python3-minimal"]')
    for p in packages:
        if not _DEB_PACKAGE.match(p):
            raise bad(f"'packages': {p!r} is not a Debian package name (optionally =VERSION)")
    age = attrs.get("max_release_age_days")
    if age is None:
        age = DEFAULT_MAX_RELEASE_AGE_DAYS
    if type(age) is not int or age <= 0:
        raise bad(f"'max_release_age_days' must be a positive integer, got {age!r}")
    return DebIndex(
        name, origin, tuple(sources), keyring, tuple(dict.fromkeys(arches)),
        tuple(dict.fromkeys(packages)), age,
    )


_PYTHON_VERSION = re.compile(r"^3\.[0-9]{1,2}$")
_LIBC_VERSION = re.compile(r"^[0-9]+\.[0-9]+$")
DEFAULT_INDEX_URL = "https://pypi.org/simple"


def _make_pip_lock(
    name: str, attrs: dict[str, Any], origin: str, bad: Callable[[str], UserInputError]
) -> PipLock:
    import hashlib

    requirements, lock = attrs.get("requirements"), attrs.get("lock")
    if (requirements is None) == (lock is None):
        raise bad("give one of 'requirements' (a requirements.txt with --hash) or 'lock' "
                  "(a pylock.toml)")
    source = requirements if requirements is not None else lock
    if not isinstance(source, str) or not source or source.startswith("/") or (
        ".." in source.split("/")
    ):
        raise bad(f"the lock file must be a path inside the workspace, got {source!r}")
    if lock is not None and not re.match(r"^pylock(\.[^./]+)?\.toml$", source.rsplit("/", 1)[-1]):
        raise bad(f"'lock' must name a PEP 751 file, pylock.toml or pylock.NAME.toml, got {source!r}")
    workspace: Path = attrs["_workspace"]
    try:
        data = (workspace / source).read_bytes()
    except OSError as e:
        raise bad(f"cannot read {source!r}: {e.strerror or e}") from None
    version = attrs.get("python_version")
    if not isinstance(version, str) or not _PYTHON_VERSION.match(version):
        raise bad(f"'python_version' must be the target's Python, like \"3.11\", got {version!r}")
    platforms = attrs.get("platforms") or ["linux/amd64"]
    if not isinstance(platforms, list) or not all(
        isinstance(p, str) and p in ("linux/amd64", "linux/arm64") for p in platforms
    ):
        raise bad(f'\'platforms\' must be a list of "linux/amd64" and "linux/arm64", got {platforms!r}')
    index_url = attrs.get("index_url") or DEFAULT_INDEX_URL
    extra = attrs.get("extra_index_urls") or []
    if not isinstance(extra, list):
        raise bad(f"'extra_index_urls' must be a list of URLs, got {extra!r}")
    for url in (index_url, *extra):
        if not isinstance(url, str) or not url.startswith(("http://", "https://", "file://")):
            raise bad(f"index URL {url!r} must start with https://, http:// or file://")
    libc: dict[str, str | None] = {}
    for key, default in (("glibc", "2.28"), ("musl", None)):
        value = attrs.get(key)
        if value is not None and (not isinstance(value, str) or not _LIBC_VERSION.match(value)):
            raise bad(f"'{key}' must be a version like \"2.28\", got {value!r}")
        libc[key] = value if value is not None else default
    pyproject, pyproject_sha256 = _pyproject(attrs.get("pyproject"), source, workspace, bad)
    return PipLock(
        name, origin, source, hashlib.sha256(data).hexdigest(), version,
        tuple(dict.fromkeys(platforms)), index_url.rstrip("/"),
        tuple(u.rstrip("/") for u in extra), libc["glibc"] or "2.28", libc["musl"],
        pyproject, pyproject_sha256,
    )


def _pyproject(
    value: Any, source: str, workspace: Path, bad: Callable[[str], UserInputError]
) -> tuple[str | None, str | None]:
    """The pyproject.toml a pip_lock is checked against: the one named, else the one beside the
    lock file when there is one; `pyproject = ""` checks none."""
    import hashlib

    if value == "":
        return None, None
    if value is None:
        beside = source.rpartition("/")[0]
        value = f"{beside}/pyproject.toml" if beside else "pyproject.toml"
        if not (workspace / value).is_file():
            return None, None
    path = _workspace_file(value, "pyproject", bad)
    try:
        data = (workspace / path).read_bytes()
    except OSError as e:
        raise bad(f"cannot read {path!r}: {e.strerror or e}") from None
    return path, hashlib.sha256(data).hexdigest()
def _workspace_file(value: Any, key: str, bad: Callable[[str], UserInputError]) -> str:
    if not isinstance(value, str) or not value or value.startswith("/") or (
        ".." in value.split("/")
    ):
        raise bad(f"'{key}' must be a file path inside the workspace, got {value!r}")
    return value.strip("/")


def _make_npm_lock(
    name: str, attrs: dict[str, Any], origin: str, bad: Callable[[str], UserInputError]
) -> NpmLock:
    lock = _workspace_file(attrs.get("lock"), "lock", bad)
    default_json = lock.rpartition("/")[0] + "/package.json" if "/" in lock else "package.json"
    package_json = _workspace_file(attrs.get("package_json") or default_json, "package_json", bad)
    registry = attrs.get("registry") or "https://registry.npmjs.org"
    if not isinstance(registry, str) or not registry.startswith(("http://", "https://")):
        raise bad(f"'registry' must be an http:// or https:// URL, got {registry!r}")
    npmrc = attrs.get("npmrc")
    if npmrc is not None:
        npmrc = _workspace_file(npmrc, "npmrc", bad)
    return NpmLock(name, origin, lock, package_json, registry.rstrip("/"), npmrc)
