"""Reading a pinned Python requirement set: a requirements.txt with `--hash` lines, or a PEP 751
`pylock.toml`, into `PinnedRequirement` values that name the line they came from."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyimg.errors import UserInputError

__all__ = ["PinnedRequirement", "WheelFile", "canonical_name", "parse_pylock", "parse_requirements"]

_HASH = re.compile(r"--hash[=\s]+([A-Za-z0-9]+):([0-9a-fA-F]+)")
# Options of a requirements file that say where to look, not what to install: the declaration
# names the index, so they are read past.
_IGNORED_OPTIONS = ("--index-url", "-i ", "--extra-index-url", "--find-links", "-f ",
                    "--trusted-host", "--prefer-binary", "--only-binary", "--no-binary",
                    "--pre", "--no-index")
_REFUSED_OPTIONS = ("-r", "--requirement", "-c", "--constraint", "-e", "--editable")


def canonical_name(name: str) -> str:
    """PEP 503's normalized project name (`Typing_Extensions` -> `typing-extensions`)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class WheelFile:
    """A distribution file a pylock.toml lists: its file name, URL and sha256."""

    filename: str
    url: str
    sha256: str


@dataclass(frozen=True)
class PinnedRequirement:
    """One pinned package of the set: `name==version`, the hashes allowed, its marker, extras."""

    name: str  # canonical
    version: str
    hashes: frozenset[str]  # sha256 hex digits
    origin: str  # FILE:LINE:COL
    marker: str | None = None
    extras: tuple[str, ...] = ()
    # pylock.toml lists the files itself: the wheel is chosen among them, no index is read.
    wheels: tuple[WheelFile, ...] = ()
    has_sdist: bool = False


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of each logical line: continuations joined, comments dropped."""
    lines: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw)
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending.append(line.rstrip()[:-1])
            continue
        pending.append(line)
        joined = " ".join(p.strip() for p in pending).strip()
        pending = []
        if joined:
            lines.append((start, joined))
    if pending:
        joined = " ".join(p.strip() for p in pending).strip()
        if joined:
            lines.append((start, joined))
    return lines


def parse_requirements(text: str, source: str) -> list[PinnedRequirement]:
    """The requirements of a pip-compile / `uv pip compile --generate-hashes` file. Every
    requirement must be `name==version` with at least one `--hash=sha256:`; anything else is
    refused naming its line."""
    from packaging.requirements import InvalidRequirement, Requirement

    found: dict[str, PinnedRequirement] = {}
    for number, line in _logical_lines(text):
        origin = f"{source}:{number}:1"
        if line.startswith("-") and not line.startswith("--hash"):
            if line.startswith(_IGNORED_OPTIONS) or line.split()[0] in _IGNORED_OPTIONS:
                continue
            if line.split()[0] in _REFUSED_OPTIONS or line.startswith(_REFUSED_OPTIONS):
                raise UserInputError(
                    f"{line.split()[0]}: pyimg reads one self-contained requirements file (write "
                    "the included requirements into it, as pip-compile does)", origin=origin)
            raise UserInputError(f"unknown option {line.split()[0]!r}", origin=origin)
        hashes: set[str] = set()
        for algorithm, digest in _HASH.findall(line):
            if algorithm.lower() != "sha256" or len(digest) != 64:
                raise UserInputError(
                    f"--hash={algorithm}:{digest[:16]}...: pyimg checks sha256 hashes only",
                    origin=origin)
            hashes.add(digest.lower())
        spec = _HASH.sub("", line).strip()
        if not spec:
            raise UserInputError("--hash options without a requirement (is a '\\' missing at the "
                                 "end of the line before?)", origin=origin)
        if re.search(r"(^|\s)--?[a-z]", spec):
            raise UserInputError(f"{spec!r}: only --hash options may follow a requirement",
                                 origin=origin)
        try:
            req = Requirement(spec)
        except InvalidRequirement as e:
            raise UserInputError(f"not a requirement: {spec!r} ({e})", origin=origin) from None
        name = canonical_name(req.name)
        pins = [s for s in req.specifier if s.operator in ("==", "===") and "*" not in s.version]
        if req.url or len(pins) != 1 or len(req.specifier) != 1:
            raise UserInputError(
                f"{name}: every requirement must be pinned as NAME==VERSION (as pip-compile "
                f"--generate-hashes writes it), got {spec!r}", origin=origin)
        if not hashes:
            raise UserInputError(
                f"{name}=={pins[0].version} has no --hash: every requirement must be pinned by "
                "its sha256 (pip-compile --generate-hashes, uv pip compile --generate-hashes)",
                origin=origin)
        pinned = PinnedRequirement(
            name, pins[0].version, frozenset(hashes), origin,
            str(req.marker) if req.marker else None, tuple(sorted(req.extras)))
        previous = found.get(name)
        if previous is not None:
            raise UserInputError(f"{name} is already required at {previous.origin}", origin=origin)
        found[name] = pinned
    return sorted(found.values(), key=lambda r: r.name)


def parse_pylock(text: str, source: str) -> list[PinnedRequirement]:
    """The packages of a PEP 751 lock file (lock-version 1.x): each with the wheels it lists,
    every one carrying a sha256."""
    import tomllib

    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserInputError(f"not valid TOML: {e}", origin=source) from None
    version = str(doc.get("lock-version", ""))
    if not version.startswith("1."):
        raise UserInputError(f"lock-version {version!r} is not a PEP 751 version 1.x lock",
                             origin=source)
    packages = doc.get("packages")
    if not isinstance(packages, list):
        raise UserInputError("no [[packages]] array", origin=source)
    lines = text.splitlines()
    found: dict[str, PinnedRequirement] = {}
    for i, pkg in enumerate(packages):
        if not isinstance(pkg, dict) or not isinstance(pkg.get("name"), str):
            raise UserInputError(f"packages[{i}] has no name", origin=source)
        name = canonical_name(pkg["name"])
        origin = f"{source}:{_line_of(lines, pkg['name'])}:1"
        pkg_version = pkg.get("version")
        if not isinstance(pkg_version, str):
            raise UserInputError(f"{name}: no version (pyimg installs pinned versions only)",
                                 origin=origin)
        wheels = []
        for w in pkg.get("wheels") or []:
            hashes = w.get("hashes") if isinstance(w, dict) else None
            sha = hashes.get("sha256") if isinstance(hashes, dict) else None
            url = w.get("url") if isinstance(w, dict) else None
            if not isinstance(sha, str) or len(sha) != 64:
                raise UserInputError(f"{name}=={pkg_version}: a wheel without a sha256 hash",
                                     origin=origin)
            if not isinstance(url, str):
                raise UserInputError(f"{name}=={pkg_version}: a wheel without a 'url' (local "
                                     "'path' wheels are not supported)", origin=origin)
            filename = w.get("name") or url.split("#", 1)[0].rsplit("/", 1)[-1]
            wheels.append(WheelFile(str(filename), url, sha.lower()))
        if not wheels and not pkg.get("sdist"):
            raise UserInputError(f"{name}=={pkg_version}: no wheels (vcs, directory and archive "
                                 "sources are not supported)", origin=origin)
        marker = pkg.get("marker")
        if name in found:
            raise UserInputError(f"{name} is listed twice (pyimg reads one version per package)",
                                 origin=origin)
        found[name] = PinnedRequirement(
            name, pkg_version, frozenset(w.sha256 for w in wheels), origin,
            marker if isinstance(marker, str) else None, (), tuple(wheels),
            has_sdist=bool(pkg.get("sdist")))
    return sorted(found.values(), key=lambda r: r.name)


def _line_of(lines: list[str], name: str) -> int:
    pattern = re.compile(r'^\s*name\s*=\s*["\']' + re.escape(name) + r'["\']')
    return next((n for n, line in enumerate(lines, 1) if pattern.match(line)), 1)
