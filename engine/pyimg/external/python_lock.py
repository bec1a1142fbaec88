"""`pip_lock`: a pinned Python requirement set resolved into one wheel per package and target
platform (docs/external-inputs.md#python-packages).

`pyimg lock` reads the requirements.txt (or pylock.toml), reads each project's page on the
declared indexes (PEP 691 JSON or PEP 503 HTML; pylock.toml lists its files itself), chooses the
wheel pip would for each platform (external/python_index.py), checks its sha256 against the
requirement's hashes, reads the dependencies from the wheel's METADATA with environment markers
evaluated for the platform, and records URL, sha256 and dependencies in pyimg.lock. Building reads
only the lock: the repository `@NAME` holds the pinned wheels and one `py_package` target per
package (its transitive set, per platform) and `:all`.
"""

from __future__ import annotations

import email.parser
import hashlib
import json
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyimg.core.digest import canonical_json
from pyimg.errors import IntegrityError, UserInputError
from pyimg.external.python_auth import without_userinfo
from pyimg.external.python_index import (
    ACCEPT,
    PageFetch,
    choose_wheel,
    marker_environment,
    parse_index_page,
    target_tags,
)
from pyimg.external.python_requirements import (
    PinnedRequirement,
    WheelFile,
    canonical_name,
    parse_pylock,
    parse_requirements,
)
from pyimg.loading.module_file import PipLock

__all__ = [
    "WheelPin",
    "pip_entry_covers",
    "pip_entry_pins",
    "pip_lock_entry",
    "read_requirements",
    "render_pip_entry",
    "target_name",
    "write_pip_repo",
]

# (url, sha256 the index gave or "") -> the downloaded wheel, kept in the repository cache
FetchWheel = Callable[[str, str], Path]

_WHEEL_FILE = re.compile(r"^[A-Za-z0-9_.+!-]+\.whl$")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SHOWN_TAGS = 8


@dataclass(frozen=True)
class WheelPin:
    """One wheel as pyimg.lock records it, for one platform of the declaration."""

    name: str  # canonical project name
    version: str
    filename: str
    url: str
    sha256: str
    deps: tuple[str, ...]  # canonical names, markers already evaluated for the platform


def target_name(name: str) -> str:
    """The target of a project in the repository: `@pypi//typing_extensions`, as rules_python."""
    return name.replace("-", "_")


def read_requirements(decl: PipLock, workspace: Path) -> list[PinnedRequirement]:
    try:
        text = (workspace / decl.source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserInputError(f"pip_lock '{decl.name}': cannot read {decl.source!r}: {e}",
                             origin=decl.origin) from None
    pins = parse_pylock(text, decl.source) if decl.is_pylock else parse_requirements(text, decl.source)
    check_pyproject(decl, workspace, pins)
    return pins


def check_pyproject(decl: PipLock, workspace: Path, pins: list[PinnedRequirement]) -> None:
    """Refuse a lock out of date with the declaration's pyproject.toml: each requirement of
    `[project].dependencies` whose marker holds on some declared platform must be pinned, at a
    version its specifier allows. It can be checked only when the dependencies are written
    there (a static list); a pyproject.toml without `[project]`, or with `dependencies` in
    `dynamic`, is not read further."""
    import tomllib

    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.version import InvalidVersion, Version

    if decl.pyproject is None:
        return
    path = decl.pyproject
    try:
        text = (workspace / path).read_text(encoding="utf-8")
        doc = tomllib.loads(text)
    except (OSError, UnicodeDecodeError) as e:
        raise UserInputError(f"pip_lock '{decl.name}': cannot read {path!r}: {e}",
                             origin=decl.origin) from None
    except tomllib.TOMLDecodeError as e:
        raise UserInputError(f"not valid TOML: {e}", origin=path) from None
    project = doc.get("project")
    if not isinstance(project, dict) or "dependencies" in (project.get("dynamic") or []):
        return
    dependencies = project.get("dependencies") or []
    if not isinstance(dependencies, list) or not all(isinstance(d, str) for d in dependencies):
        raise UserInputError("[project].dependencies must be a list of strings", origin=path)
    lines = text.splitlines()
    by_name = {p.name: p for p in pins}
    for spec in dependencies:
        origin = _origin_in(path, lines, spec)
        try:
            req = Requirement(spec)
        except InvalidRequirement as e:
            raise UserInputError(f"not a requirement: {spec!r} ({e})", origin=origin) from None
        platforms = [p for p in decl.platforms if req.marker is None or req.marker.evaluate(
            {**marker_environment(decl.python_version, p), "extra": ""})]
        if not platforms:
            continue
        name = canonical_name(req.name)
        pin = by_name.get(name)
        if pin is None or not any(_applies(pin, marker_environment(decl.python_version, p))
                                  for p in platforms):
            raise UserInputError(
                f"pip_lock '{decl.name}': {decl.source} is out of date with {path}: it does not "
                f"pin {spec!r}" + (f" for {platforms[0]}" if pin is not None else "")
                + f"; compile {decl.source} again, then run `pyimg lock`", origin=origin)
        try:
            allowed = req.specifier.contains(Version(pin.version), prereleases=True)
        except InvalidVersion:
            allowed = False
        if not allowed:
            raise UserInputError(
                f"pip_lock '{decl.name}': {decl.source} is out of date with {path}: it pins "
                f"{name}=={pin.version} (at {pin.origin}), which {spec!r} does not allow; "
                f"compile {decl.source} again, then run `pyimg lock`", origin=origin)


def _origin_in(path: str, lines: list[str], spec: str) -> str:
    """FILE:LINE:COL of the quoted string `spec` in a TOML file (its first occurrence)."""
    for number, line in enumerate(lines, 1):
        for quote in ('"', "'"):
            col = line.find(quote + spec + quote)
            if col >= 0:
                return f"{path}:{number}:{col + 1}"
    return path


def _applies(req: PinnedRequirement, env: dict[str, str]) -> bool:
    if req.marker is None:
        return True
    from packaging.markers import InvalidMarker, Marker, UndefinedEnvironmentName

    try:
        return Marker(req.marker).evaluate({**env, "extra": ""})
    except (InvalidMarker, UndefinedEnvironmentName) as e:
        raise UserInputError(f"{req.name}: marker {req.marker!r}: {e}", origin=req.origin) from None


def _requires_dist(wheel: Path, req: PinnedRequirement, filename: str) -> list[str]:
    """The `Requires-Dist` lines of the wheel's METADATA."""
    try:
        with zipfile.ZipFile(wheel) as z:
            metadata = [n for n in z.namelist() if n.count("/") == 1
                        and n.endswith(".dist-info/METADATA")]
            if len(metadata) != 1:
                raise UserInputError(f"{filename}: expected one .dist-info/METADATA, found "
                                     f"{metadata}", origin=req.origin)
            text = z.read(metadata[0]).decode("utf-8", "replace")
    except (zipfile.BadZipFile, OSError) as e:
        raise UserInputError(f"{filename} is not a wheel ({e})", origin=req.origin) from None
    message = email.parser.Parser().parsestr(text, headersonly=True)
    return [str(v) for v in message.get_all("Requires-Dist") or []]


def _dependencies(
    requires: dict[str, list[str]], wanted: dict[str, PinnedRequirement], env: dict[str, str],
    platform: str, decl: PipLock,
) -> dict[str, list[str]]:
    """Each package's dependencies on `platform`: Requires-Dist whose marker holds for the
    environment and for the extras asked of the package (by the requirements file or by a
    dependent), to a fixpoint. A dependency the set does not pin is refused."""
    from packaging.markers import UndefinedEnvironmentName
    from packaging.requirements import InvalidRequirement, Requirement

    parsed: dict[str, list[Requirement]] = {}
    for name, lines in requires.items():
        parsed[name] = []
        for line in lines:
            try:
                parsed[name].append(Requirement(line))
            except InvalidRequirement as e:
                raise UserInputError(f"{name}: bad Requires-Dist {line!r} in its METADATA ({e})",
                                     origin=wanted[name].origin) from None
    extras = {name: set(req.extras) for name, req in wanted.items()}
    while True:
        grew = False  # an extra asked of a package makes more of its Requires-Dist hold
        deps: dict[str, list[str]] = {}
        for name, reqs in parsed.items():
            chosen = []
            for r in reqs:
                try:
                    holds = r.marker is None or any(
                        r.marker.evaluate({**env, "extra": e}) for e in ["", *sorted(extras[name])])
                except UndefinedEnvironmentName as e:
                    raise UserInputError(f"{name}: Requires-Dist {str(r)!r}: {e}",
                                         origin=wanted[name].origin) from None
                if not holds:
                    continue
                dep = canonical_name(r.name)
                if dep not in wanted:
                    raise UserInputError(
                        f"pip_lock '{decl.name}': {name} {wanted[name].version} requires "
                        f"{str(r)!r} on {platform}, which {decl.source} does not pin for it "
                        "(the file is out of date: compile it again)", origin=wanted[name].origin)
                if not r.extras <= extras[dep]:
                    extras[dep] |= r.extras
                    grew = True
                chosen.append(dep)
            deps[name] = sorted(set(chosen) - {name})
        if not grew:
            return deps


def _no_wheel(req: PinnedRequirement, decl: PipLock, platform: str, tags: list[Any],
              files: list[WheelFile]) -> UserInputError:
    # The best tag of each kind (CPython ABI, abi3, no ABI, pure Python; for the platform or
    # any), then py3-none-any: what was tried, in order, without listing hundreds.
    shown: list[str] = []
    kinds: set[tuple[bool, str, bool]] = set()
    for t in tags:
        kind = (t.interpreter.startswith("py"), t.abi if t.abi in ("abi3", "none") else "cp",
                t.platform == "any")
        if kind not in kinds and len(shown) < _SHOWN_TAGS:
            kinds.add(kind)
            shown.append(str(t))
    if "py3-none-any" not in shown:
        shown.append("py3-none-any")
    listed = sorted({f.filename for f in files})
    sdist = req.has_sdist or any(not f.filename.endswith(".whl") for f in files)
    return UserInputError(
        f"pip_lock '{decl.name}': no wheel of {req.name}=={req.version} for {platform} "
        f"(CPython {decl.python_version}); tags tried, best first ({len(tags)} in all): "
        f"{', '.join(shown)}; the files are: {', '.join(listed) or 'none'}"
        + (" (pyimg does not build sdists: use a version with wheels, or build the wheel "
           "yourself and serve it on an index)" if sdist else ""),
        origin=req.origin)


def _index_files(decl: PipLock, req: PinnedRequirement, fetch: PageFetch,
                 pages: dict[str, list[WheelFile]]) -> list[WheelFile]:
    """Every file the declared indexes list for the project (the first index first)."""
    if req.name in pages:
        return pages[req.name]
    files: list[WheelFile] = []
    errors = []
    for index in (decl.index_url, *decl.extra_index_urls):
        url = f"{index}/{req.name}/"
        try:
            body, content_type, final = fetch(url, ACCEPT)
        except OSError as e:
            errors.append(f"{without_userinfo(url)}: {e}")
            continue
        files.extend(parse_index_page(body, content_type, final, f"pip_lock '{decl.name}'").files)
    if not files and errors:
        raise UserInputError(f"pip_lock '{decl.name}': cannot read the index page of "
                             f"{req.name}: " + "; ".join(errors), origin=req.origin)
    pages[req.name] = files
    return files


def pip_lock_entry(decl: PipLock, workspace: Path, fetch: PageFetch,
               fetch_wheel: FetchWheel) -> dict[str, Any]:
    requirements = read_requirements(decl, workspace)
    pages: dict[str, list[WheelFile]] = {}
    requires: dict[str, list[str]] = {}  # sha256 -> Requires-Dist, each wheel read once
    wheels: dict[str, dict[str, dict[str, Any]]] = {}
    for platform in decl.platforms:
        tags = target_tags(decl.python_version, platform, decl.glibc, decl.musl)
        env = marker_environment(decl.python_version, platform)
        wanted = {r.name: r for r in requirements if _applies(r, env)}
        chosen: dict[str, WheelFile] = {}
        for req in wanted.values():
            files = list(req.wheels) if req.wheels else _index_files(decl, req, fetch, pages)
            # As pip: when some file has an allowed hash, only those (and files the index gives
            # no hash for) are candidates; when none has, the best one fails the check below.
            allowed = [f for f in files if f.sha256 in req.hashes]
            if allowed:
                files = allowed + [f for f in files if not f.sha256]
            wheel = choose_wheel(files, req.name, req.version, tags)
            if wheel is None:
                raise _no_wheel(req, decl, platform, tags, files)
            if wheel.sha256 and wheel.sha256 not in req.hashes:
                raise IntegrityError(
                    f"pip_lock '{decl.name}': {wheel.filename} has sha256 {wheel.sha256} on the "
                    f"index, which is not among the hashes {decl.source} allows for "
                    f"{req.name}=={req.version} ({', '.join(sorted(req.hashes))})",
                    origin=req.origin)
            chosen[req.name] = wheel
        by_name = {}
        for name, wheel in chosen.items():
            req = wanted[name]
            path = fetch_wheel(wheel.url, wheel.sha256)
            got = _sha256_file(path)
            if got not in req.hashes:
                raise IntegrityError(
                    f"pip_lock '{decl.name}': {wheel.url} has sha256 {got}, which is not among "
                    f"the hashes {decl.source} allows for {req.name}=={req.version} "
                    f"({', '.join(sorted(req.hashes))})", origin=req.origin)
            if got not in requires:
                requires[got] = _requires_dist(path, req, wheel.filename)
            by_name[name] = requires[got]
            chosen[name] = WheelFile(wheel.filename, wheel.url, got)
        deps = _dependencies(by_name, wanted, env, platform, decl)
        wheels[platform] = {
            name: {"deps": deps[name], "file": w.filename, "sha256": w.sha256,
                   "url": without_userinfo(w.url),
                   "version": wanted[name].version}
            for name, w in sorted(chosen.items())
        }
    return {
        "digest": "sha256:" + hashlib.sha256(canonical_json(wheels)).hexdigest(),
        **_covered(decl),
        "wheels": wheels,
    }


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _covered(decl: PipLock) -> dict[str, Any]:
    """What a lock entry must match to still describe the declaration."""
    return {
        "glibc": decl.glibc,
        # Credentials in a declared URL stay out of the lock (external/python_auth.py).
        "index_urls": [without_userinfo(u) for u in (decl.index_url, *decl.extra_index_urls)],
        "kind": decl.kind,
        "musl": decl.musl,
        "platforms": list(decl.platforms),
        "python_version": decl.python_version,
        "source": decl.source,
        "source_sha256": decl.source_sha256,
    }


def pip_entry_covers(decl: PipLock, entry: dict[str, Any]) -> bool:
    return (
        all(entry.get(k) == v for k, v in _covered(decl).items())
        and isinstance(entry.get("wheels"), dict)
        and isinstance(entry.get("digest"), str)
    )


def pip_entry_pins(decl: PipLock, entry: dict[str, Any]) -> dict[str, list[WheelPin]]:
    """The wheels a lock entry pins, per platform (a hand-edited entry is refused)."""
    pins: dict[str, list[WheelPin]] = {}
    try:
        for platform in decl.platforms:
            pins[platform] = [
                WheelPin(name, str(w["version"]), str(w["file"]), str(w["url"]),
                         str(w["sha256"]), tuple(str(d) for d in w["deps"]))
                for name, w in sorted(entry["wheels"][platform].items())
            ]
            names = {p.name for p in pins[platform]}
            for pin in pins[platform]:
                # File and target names come from here: nothing may leave the repository.
                if not (_NAME.match(pin.name) and _WHEEL_FILE.match(pin.filename)
                        and _SHA256.match(pin.sha256) and set(pin.deps) <= names):
                    raise ValueError(f"package {pin.name!r} file {pin.filename!r}")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise UserInputError(
            f"pyimg.lock: the entry of pip_lock '{decl.name}' is malformed ({e}); run "
            f"`pyimg lock --update {decl.name}`", origin=decl.origin) from None
    return pins


def render_pip_entry(entry: dict[str, Any]) -> str:
    """A pip_lock lock entry with one wheel per line: two branches that add different packages
    merge."""
    head = {k: v for k, v in entry.items() if k != "wheels"}
    first = json.dumps(head, sort_keys=True)[:-1] + ', "wheels": {'
    platforms = []
    for platform in sorted(entry["wheels"]):
        pkgs = entry["wheels"][platform]
        rows = [f"        {json.dumps(n)}: {json.dumps(pkgs[n], sort_keys=True)}"
                for n in sorted(pkgs)]
        platforms.append(f"      {json.dumps(platform)}: {{\n" + ",\n".join(rows) + "\n      }")
    return first + "\n" + ",\n".join(platforms) + "\n    }}"


def _closure(name: str, by_name: dict[str, WheelPin]) -> list[WheelPin]:
    seen: dict[str, WheelPin] = {}
    todo = [name]
    while todo:
        n = todo.pop()
        if n in seen or n not in by_name:
            continue
        seen[n] = by_name[n]
        todo.extend(by_name[n].deps)
    return sorted(seen.values(), key=lambda p: p.name)


def write_pip_repo(decl: PipLock, pins: dict[str, list[WheelPin]], tmp: Path,
               link: Callable[[WheelPin, Path], None]) -> None:
    """`wheels/<file>.whl` for every pin; a BUILD package per project, `@NAME//flask`, whose
    `py_package` holds the project's transitive set on each platform; and `@NAME//:all`."""
    lines = [
        f'"""Generated by pyimg from {decl.origin}: pip_lock(name = "{decl.name}")."""',
        "",
        'load("@pyimg//rules/private:python.bzl", "py_package")',
        "",
    ]
    linked: set[str] = set()
    names: set[str] = set()
    for platform_pins in pins.values():
        for pin in platform_pins:
            names.add(pin.name)
            if pin.filename not in linked:
                link(pin, tmp / "wheels" / pin.filename)
                linked.add(pin.filename)
    by_platform = {p: {pin.name: pin for pin in ps} for p, ps in pins.items()}

    def package(target: str, roots: list[str]) -> str:
        closure: dict[str, list[str]] = {}
        for platform, by_name in by_platform.items():
            files = {pin.filename for root in roots for pin in _closure(root, by_name)}
            closure[platform] = sorted(files)
        srcs = sorted({f for files in closure.values() for f in files})
        return (
            f"py_package(name = {json.dumps(target)}, "
            f"srcs = {json.dumps(['//wheels:' + f for f in srcs])}, "
            f"closure = {json.dumps({p: ' '.join(f) for p, f in sorted(closure.items())})}, "
            f"python_version = {json.dumps(decl.python_version)})"
        )

    (tmp / "wheels").mkdir(parents=True, exist_ok=True)
    (tmp / "wheels" / "BUILD.pyimg").write_text(
        lines[0] + "\n\n" + f"exports_files({json.dumps(sorted(linked))})\n")
    for name in sorted(names):
        target = target_name(name)
        (tmp / target).mkdir()
        (tmp / target / "BUILD.pyimg").write_text(
            "\n".join([*lines, package(target, [name])]) + "\n")
    lines.append(package("all", sorted(names)))
    (tmp / "BUILD.pyimg").write_text("\n".join(lines) + "\n")
