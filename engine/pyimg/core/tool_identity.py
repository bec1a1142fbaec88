"""What a host tool is, and its identity: one digest over every host file the tool is keyed by.

A host tool (docs/concepts.md, "Tools are inputs") is its program plus:
- `data`: host files or directories it reads, declared by the user (a compiler's headers and
  cc1, an interpreter's library). Hashed whole: every file's relative path, bytes and executable
  bit, every symlink's target (and, for a link to a file, that file's bytes), every directory.
  A data entry is named by its position, not its host path, so that the same toolchain unpacked
  elsewhere has the same identity and shares the cache.
- with identity "auto", what can be found from the program's own bytes, without running it:
  the ELF interpreter and the shared libraries ld.so would load at start (core/elf.py), the
  interpreter of a `#!` script (found the same way), and a CPython's standard library
  (`<prefix>/lib/pythonX.Y`, the landmark CPython itself looks for; `__pycache__` left out:
  CPython checks a cached .pyc against its source). These are named by host path.
- with identity "bytes", the program's bytes only (the behaviour before tools had identities).

The identity is the sha256 of the canonical JSON of that manifest: one value in the action key
(`host_tools` of core/action.py), memoised per build, each file hashed only when its stat changed
(core/file_digests.py). The manifest is kept (`ManifestStore`) so that `pyimg explain` can name the
file that changed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyimg.core.action import Action
from pyimg.core.cas import atomic_write_bytes
from pyimg.core.digest import Digest, canonical_json

__all__ = [
    "IDENTITY_MODES",
    "ManifestStore",
    "ToolIdentity",
    "ToolSpec",
    "changed_parts",
    "tool_identity",
    "tool_specs",
]

IDENTITY_MODES = ("auto", "bytes")
_PYTHON = re.compile(r"python(\d+\.\d+)\Z")
_MAX_SHEBANG_DEPTH = 4  # a script run by a script run by ...: the kernel allows 4 too
_SKIPPED_IN_STDLIB = frozenset({"__pycache__"})

DigestOf = Callable[[str], tuple[Digest, int, bool]]  # FileDigestCache.digest_and_mode


@dataclass(frozen=True)
class ToolSpec:
    """A host tool as an action declares it: absolute program path, identity mode, data paths."""

    path: str
    identity: str = "auto"
    data: tuple[str, ...] = ()

    def to_json(self) -> list[Any]:
        return [self.path, self.identity, list(self.data)]

    @classmethod
    def from_json(cls, value: Any) -> ToolSpec:
        if isinstance(value, str):
            return cls(value)
        path, identity, data = value
        return cls(path, identity, tuple(data))


@dataclass(frozen=True)
class ToolIdentity:
    """A tool's identity digest, the manifest it is the digest of, and every host path it read
    (the files and directories a no-op check must stat to see the tool change)."""

    digest: str
    manifest: dict[str, Any]
    paths: tuple[str, ...]
    display: dict[str, str]  # manifest part -> host path, for explain ("data[0]" -> "/opt/x")

    def roots(self) -> list[str]:
        """The host paths the tool is keyed by at their top: what a sandbox must show it."""
        return [p for p in (*self.display.values(), *self.manifest.get("auto", {}))
                if p.startswith("/")]


def tool_specs(action: Action) -> list[ToolSpec]:
    """The host tools of an action, each with its declared identity mode and data."""
    declared = {path: ToolSpec(path, identity, tuple(data))
                for path, identity, data in action.host_tool_specs}
    return [declared.get(path) or ToolSpec(path) for path in action.host_tools]


class _Walker:
    def __init__(self, digest_of: DigestOf) -> None:
        self._digest_of = digest_of
        self.paths: list[str] = []

    def file(self, path: str) -> str:
        """A file's entry: its digest, `+x` when executable (as input digests are written)."""
        digest, _, executable = self._digest_of(path)
        self.paths.append(path)
        return f"{digest}+x" if executable else str(digest)

    def link(self, path: str) -> str:
        target = os.readlink(path)
        self.paths.append(path)
        if os.path.isfile(path):  # what a reader gets through the link counts, wherever it is
            return f"link:{target}:{self.file(os.path.realpath(path))}"
        return f"link:{target}"

    def tree(self, root: str, skip: frozenset[str] = frozenset()) -> Any:
        """A path's entry: a file's, or for a directory {relative path: entry} of all below it
        ("dir" for each directory, so that an empty one counts), symlinks not followed."""
        if os.path.islink(root):
            return self.link(root)
        if not os.path.isdir(root):
            return self.file(root)
        out: dict[str, str] = {}
        for dirpath, dirnames, filenames in os.walk(root):
            self.paths.append(dirpath)  # a file added or removed changes its directory
            rel_dir = os.path.relpath(dirpath, root)
            kept = []
            for d in sorted(dirnames):
                full = os.path.join(dirpath, d)
                rel = os.path.normpath(os.path.join(rel_dir, d))
                if os.path.islink(full):
                    out[rel] = self.link(full)
                elif d not in skip:
                    out[rel] = "dir"
                    kept.append(d)
            dirnames[:] = kept
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                rel = os.path.normpath(os.path.join(rel_dir, name))
                out[rel] = self.link(full) if os.path.islink(full) else self.file(full)
        return out


def _shebang(path: str) -> str | None:
    """The interpreter of a `#!` script, resolved as the sandbox's PATH would (`env NAME`)."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].decode(errors="replace").split()
    if not words:
        return None
    if os.path.basename(words[0]) == "env" and len(words) > 1 and not words[1].startswith("-"):
        for d in ("/usr/bin", "/bin"):
            if os.path.exists(os.path.join(d, words[1])):
                return os.path.join(d, words[1])
        return None
    return words[0]


def _python_stdlib(program: str) -> str | None:
    match = _PYTHON.match(os.path.basename(program))
    if match is None:
        return None
    stdlib = os.path.join(os.path.dirname(os.path.dirname(program)), "lib", f"python{match[1]}")
    return stdlib if os.path.isfile(os.path.join(stdlib, "os.py")) else None


def _auto(program: str, walker: _Walker, out: dict[str, Any], depth: int = 0) -> None:
    from pyimg.core.elf import library_closure

    interpreter, libraries = library_closure(program)
    if interpreter is not None:
        out.setdefault(os.path.realpath(interpreter), walker.file(os.path.realpath(interpreter)))
    for soname, where in sorted(libraries.items()):
        key = os.path.realpath(where) if where is not None else f"missing:{soname}"
        if key not in out:
            out[key] = walker.file(key) if where is not None else "missing"
    stdlib = _python_stdlib(program)
    if stdlib is not None and stdlib not in out:
        out[stdlib] = walker.tree(stdlib, _SKIPPED_IN_STDLIB)
    script = _shebang(program) if depth < _MAX_SHEBANG_DEPTH else None
    if script is not None and os.path.exists(script):
        real = os.path.realpath(script)
        if real not in out:
            out[real] = walker.file(real)
            _auto(real, walker, out, depth + 1)


def tool_identity(spec: ToolSpec, digest_of: DigestOf) -> ToolIdentity:
    """The identity of `spec` on this machine. Raises FileNotFoundError naming a missing path."""
    walker = _Walker(digest_of)
    program = os.path.realpath(spec.path)
    walker.paths.append(spec.path)
    manifest: dict[str, Any] = {"program": walker.file(program), "identity": spec.identity}
    display = {"program": program}
    data = []
    for i, path in enumerate(spec.data):
        if not os.path.lexists(path):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        data.append(walker.tree(path))
        display[f"data[{i}]"] = path
    manifest["data"] = data
    if spec.identity == "auto":
        auto: dict[str, Any] = {}
        _auto(program, walker, auto)
        manifest["auto"] = auto
    digest = "sha256:" + hashlib.sha256(canonical_json(manifest)).hexdigest()
    return ToolIdentity(digest, manifest, tuple(sorted(set(walker.paths))), display)


class ManifestStore:
    """Tool manifests by identity digest, under `<root>/tool_identities/`, each written once;
    read by `pyimg explain`. Losing one costs only the detail of an explanation."""

    def __init__(self, root: Path) -> None:
        self._dir = root / "tool_identities"

    def _path(self, digest: str) -> Path:
        return self._dir / f"{digest.removeprefix('sha256:')}.json"

    def put(self, identity: ToolIdentity) -> None:
        path = self._path(identity.digest)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            record = {"manifest": identity.manifest, "display": identity.display}
            atomic_write_bytes(path, canonical_json(record))

    def get(self, digest: str) -> dict[str, Any] | None:
        try:
            record = json.loads(self._path(digest).read_bytes())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None


def _flatten(part: str, value: Any, base: str) -> dict[str, str]:
    """{host path or part name: entry} of one manifest part, directories' files by full path."""
    if isinstance(value, dict):
        return {os.path.join(base, rel): entry for rel, entry in value.items()}
    return {base if base else part: value}


def changed_parts(old: dict[str, Any] | None, new: dict[str, Any] | None, limit: int = 5) -> list[str]:
    """What differs between two stored manifest records, one phrase each ("/usr/lib/x.py
    changed"), at most `limit` and then a count; [] when either record is missing."""
    if not old or not new:
        return []
    a, b = old.get("manifest") or {}, new.get("manifest") or {}
    da, db = old.get("display") or {}, new.get("display") or {}
    out: list[str] = []
    if a.get("identity") != b.get("identity"):
        out.append(f"identity mode {a.get('identity')} -> {b.get('identity')}")
    if a.get("program") != b.get("program"):
        out.append(f"{db.get('program') or da.get('program') or 'program'} changed")
    files_a: dict[str, str] = {}
    files_b: dict[str, str] = {}
    for files, manifest in ((files_a, a), (files_b, b)):
        # Data entries by position, shown at the newer build's paths (a moved copy is the same).
        for i, value in enumerate(manifest.get("data") or []):
            name = f"data[{i}]"
            files.update(_flatten(name, value, db.get(name) or da.get(name) or name))
        for path, value in (manifest.get("auto") or {}).items():
            files.update(_flatten(path, value, path))
    for path in sorted(set(files_a) | set(files_b)):
        if path not in files_a:
            out.append(f"{path} added")
        elif path not in files_b:
            out.append(f"{path} removed")
        elif files_a[path] != files_b[path]:
            out.append(f"{path} changed")
    if len(out) > limit:
        out = out[:limit] + [f"and {len(out) - limit} more"]
    return out
