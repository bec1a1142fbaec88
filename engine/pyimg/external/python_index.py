"""Python package indexes and wheel tags: the files a PEP 503 (HTML) or PEP 691 (JSON) simple
index lists for a project, the tags a target platform accepts in pip's order of preference, and
the wheel pip would choose among them."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import TYPE_CHECKING

from pyimg.errors import UserInputError
from pyimg.external.python_requirements import WheelFile

if TYPE_CHECKING:
    from packaging.tags import Tag

__all__ = [
    "ACCEPT",
    "IndexPage",
    "choose_wheel",
    "get_page",
    "marker_environment",
    "parse_index_page",
    "target_tags",
]

ACCEPT = "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
_JSON_TYPES = ("application/vnd.pypi.simple.v1+json", "application/json")
# pyimg's platform -> the machine name wheel tags and markers use.
_MACHINES = {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}
# Legacy manylinux names of the glibc versions they stand for (PEP 600).
_LEGACY = {(2, 17): "manylinux2014", (2, 12): "manylinux2010", (2, 5): "manylinux1"}

# (url, accept) -> (body, content type, final URL)
PageFetch = Callable[[str, str], tuple[bytes, str, str]]


@dataclass(frozen=True)
class IndexPage:
    """What a simple index lists for one project: its files, each with a sha256 when given."""

    url: str
    files: tuple[WheelFile, ...]


def _version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


def _platform_tags(platform: str, glibc: str, musl: str | None) -> list[str]:
    """Newest first, as packaging.tags lists them for a running system."""
    arch = _MACHINES[platform]
    if musl is not None:
        major, minor = _version(musl)
        return [f"musllinux_{major}_{m}_{arch}" for m in range(minor, -1, -1)]
    major, minor = _version(glibc)
    oldest = 5 if arch == "x86_64" else 17
    tags = []
    for m in range(minor, oldest - 1, -1):
        tags.append(f"manylinux_{major}_{m}_{arch}")
        legacy = _LEGACY.get((major, m))
        if legacy is not None and (arch == "x86_64" or m == 17):
            tags.append(f"{legacy}_{arch}")
    return tags


def target_tags(python_version: str, platform: str, glibc: str, musl: str | None) -> list[Tag]:
    """The tags a CPython `python_version` on `platform` accepts, most preferred first: pip's
    order (interpreter-specific ABI, abi3 of this and older versions, none; then pure-Python
    tags, `py3-none-any` last but one)."""
    from packaging.tags import compatible_tags, cpython_tags

    version = _version(python_version)
    interpreter = f"cp{version[0]}{version[1]}"
    platforms = _platform_tags(platform, glibc, musl)
    return [*cpython_tags(version, [interpreter], platforms),
            *compatible_tags(version, interpreter, platforms)]


def marker_environment(python_version: str, platform: str) -> dict[str, str]:
    """The values environment markers see on the target (CPython on Linux)."""
    return {
        "implementation_name": "cpython",
        "implementation_version": f"{python_version}.0",
        "os_name": "posix",
        "platform_machine": _MACHINES[platform],
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": f"{python_version}.0",
        "python_version": python_version,
        "sys_platform": "linux",
    }


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []  # (href, text)
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href") or ""
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append((self._href, "".join(self._text).strip()))
            self._href = None


def parse_index_page(body: bytes, content_type: str, url: str, what: str) -> IndexPage:
    """The files of a project page: PEP 691 JSON or PEP 503 HTML (relative URLs resolved against
    the page, the `#sha256=` fragment read as the hash)."""
    files = []
    if content_type.split(";")[0].strip() in _JSON_TYPES:
        try:
            doc = json.loads(body)
            entries = [(f["url"], f["filename"], (f.get("hashes") or {}).get("sha256", ""))
                       for f in doc["files"]]
        except (ValueError, KeyError, TypeError) as e:
            raise UserInputError(f"{what}: {url} is not a PEP 691 project page ({e})") from None
        for href, filename, sha in entries:
            files.append(WheelFile(str(filename), urllib.parse.urljoin(url, str(href)),
                                   str(sha).lower()))
    else:
        parser = _Links()
        parser.feed(body.decode("utf-8", "replace"))
        for href, text in parser.links:
            absolute = urllib.parse.urljoin(url, href)
            base, _, fragment = absolute.partition("#")
            sha = fragment[len("sha256="):] if fragment.startswith("sha256=") else ""
            filename = text or urllib.parse.unquote(base.rsplit("/", 1)[-1])
            files.append(WheelFile(filename, base, sha.lower()))
    return IndexPage(url, tuple(files))


def choose_wheel(
    files: tuple[WheelFile, ...] | list[WheelFile], name: str, version: str, tags: list[Tag]
) -> WheelFile | None:
    """The wheel of `name==version` whose best tag comes first in `tags` (pip's choice), or
    None when no wheel of that version fits."""
    from packaging.utils import (
        InvalidWheelFilename,
        canonicalize_name,
        canonicalize_version,
        parse_wheel_filename,
    )

    rank = {tag: i for i, tag in enumerate(tags)}
    best: tuple[int, str, WheelFile] | None = None
    want = canonicalize_version(version)
    for f in files:
        if not f.filename.endswith(".whl"):
            continue
        try:
            wname, wversion, _build, wtags = parse_wheel_filename(f.filename)
        except InvalidWheelFilename:
            continue
        if canonicalize_name(wname) != name or canonicalize_version(wversion) != want:
            continue
        ranks = [rank[t] for t in wtags if t in rank]
        if ranks and (best is None or (min(ranks), f.filename) < best[:2]):
            best = (min(ranks), f.filename, f)
    return best[2] if best else None


def get_page(url: str, accept: str, headers: dict[str, str] | None = None) -> tuple[bytes, str, str]:
    """GET an index page (a `PageFetch`): `headers` carry the index's credentials
    (external/python_auth.py), which never travel in the URL, so the final URL the page's links
    resolve against holds none. A `file://` index is a directory tree whose project pages are
    `NAME/index.html`."""
    from pyimg.external.python_auth import without_userinfo

    if url.startswith("file://"):
        path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
        if path.endswith("/"):
            path += "index.html"
        with open(path, "rb") as f:
            return f.read(), "text/html", url
    import requests

    try:
        resp = requests.get(without_userinfo(url), headers={"Accept": accept, **(headers or {})},
                            timeout=(10, 120))
    except requests.RequestException as e:
        raise OSError(str(e)) from None
    if resp.status_code != 200:
        raise OSError(f"HTTP {resp.status_code}")
    return resp.content, resp.headers.get("Content-Type", "text/html"), without_userinfo(resp.url)
